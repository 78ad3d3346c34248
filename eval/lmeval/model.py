"""`omniopd-completions` and `omniopd-chat-completions`: lm-eval's API models with a
distinct seed per sample, sending the very requests `omniopd eval --endpoint` sends.

lm-eval runs `repeats: k` by sending the same request k times, and its API models put
their one `seed` model argument into every payload — so a server that honours seeds
(vLLM does) returns k identical samples and Pass@1 "averaged over k" is one sample.
These subclasses give request r of a doc the seed `sample_seed(seed, doc["id"], r)`
(eval.results.sample_seed), the seed OmniOPD's own evaluation uses for sample r of
that item, so the two harnesses draw the same samples from a seeded server.

Which one matches which `omniopd eval` (docs/eval.md, "lm-eval"):

- `omniopd eval --endpoint URL` (`eval.endpoint_api: chat`, the default) sends the
  benchmark prompt as the one user message to `/v1/chat/completions` (the server applies
  the model's chat template): `--model omniopd-chat-completions --apply_chat_template`.
- `eval.endpoint_api: completions` sends the prompt as is to `/v1/completions`:
  `--model omniopd-completions`, without `--apply_chat_template`.

Registered when this module is imported; `python -m eval.lmeval ...` imports it before
handing over to lm-eval's CLI. Model arguments are those of `local-completions` /
`local-chat-completions` (base_url, model, tokenizer_backend, num_concurrent, seed, ...).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from lm_eval.api.instance import Instance
from lm_eval.api.registry import register_model
from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

from eval.results import sample_seed


class _PerSampleSeeds:
    """Mixin for lm-eval's API models: each (doc, repeat) request carries its own seed."""

    _seed: int

    def seeded(self, requests: list[Instance]) -> list[Instance]:
        """Copies of `requests` whose generation kwargs carry a per-(doc, repeat) seed.

        lm-eval passes the k repeats of a doc as the same Instance object k times, so
        the repeat index is the number of times that object was seen before.
        """
        seen: Counter[int] = Counter()
        out = []
        for req in requests:
            repeat = seen[id(req)]
            seen[id(req)] += 1
            context, gen_kwargs, *rest = req.args
            doc_key = str(req.doc.get("id", req.doc_id)) if isinstance(req.doc, dict) else str(req.doc_id)
            kwargs = {**gen_kwargs, "seed": sample_seed(self._seed, doc_key, repeat)}
            out.append(dataclasses.replace(req, arguments=(context, kwargs, *rest), resps=[], filtered_resps={}))
        return out

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        # The payload is {"seed": self._seed, **gen_kwargs}, so the kwargs' seed wins.
        return super().generate_until(self.seeded(requests), disable_tqdm=disable_tqdm)  # type: ignore[misc]


@register_model("omniopd-completions")
class OmniCompletions(_PerSampleSeeds, LocalCompletionsAPI):
    """`/v1/completions` with the prompt as is (`eval.endpoint_api: completions`)."""


@register_model("omniopd-chat-completions")
class OmniChatCompletions(_PerSampleSeeds, LocalChatCompletion):
    """`/v1/chat/completions` with the prompt as the one user message (`eval.endpoint_api:
    chat`, the default); needs `--apply_chat_template`, which makes lm-eval send messages."""
