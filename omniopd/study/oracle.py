"""The ground truth of the estimator study: an open-weight teacher's exact probability of a
student chunk given its prefix (Section 6.1 of the OmniOPD paper, "true trajectory
log-probabilities").

Definition (docs/estimator-study.md): the context is what the teacher sees in raw mode,
`chat_template(prompt) + prefix`, tokenized by the teacher's tokenizer as its server does
(special tokens added as the tokenizer adds them by default); the chunk is the student's
chunk *text*, tokenized on its own by the teacher's tokenizer (no special tokens),
u_1..u_L. Then

    log pi*_teacher(u_j) = log pi_teacher(u_j | context, u_<j)       one teacher-forced pass
    oracle   = exp( (1/L) sum_j log pi*_teacher(u_j) )                length-normalised (the
                                                                      Eq. 4 form, on the teacher)
    sequence = exp( sum_j log pi*_teacher(u_j) )                      unnormalised, reported beside it

Limits, stated: the probability is that of the canonical tokenization of the chunk text
(other token sequences that spell the same text are not summed; for a BPE model they carry
little mass), and the chunk is tokenized apart from its context, so a BPE merge across the
boundary is not taken (the audit's teacher sees the same split: the prefix ends where the
chunk starts). The numbers are those of the raw, temperature-1 distribution.

A chunk the teacher's tokenizer cannot spell (its tokens decode to other text, or it needs
the unknown token) raises `OracleEncodingError` naming the chunk: the study never drops it
silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class OracleEncodingError(ValueError):
    """The oracle's tokenizer cannot encode a student chunk exactly."""


class OracleRefusedError(RuntimeError):
    """The oracle (a server) does not return the log-probabilities the study needs."""


@dataclass(frozen=True)
class OracleScore:
    """The teacher's log-probabilities of one chunk's tokens (its own tokenizer).

    Invariant: `logprobs` has one entry per chunk token (L >= 1), each <= 0."""

    logprobs: list[float]

    @property
    def normalised(self) -> float:
        """exp(mean log p): the paper's length-normalised chunk probability, in (0, 1]."""
        return math.exp(math.fsum(self.logprobs) / len(self.logprobs))

    @property
    def sequence(self) -> float:
        """exp(sum log p): the probability of the whole token sequence."""
        return math.exp(math.fsum(self.logprobs))


def encode_chunk(tokenizer, text: str, *, where: str = "chunk") -> list[int]:
    """The chunk's token ids under `tokenizer`, or OracleEncodingError if they do not spell `text`."""
    if not text:
        raise OracleEncodingError(f"{where} is empty: an empty chunk has no probability to compare")
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    unk = getattr(tokenizer, "unk_token_id", None)
    decoded = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if not ids or (unk is not None and unk in ids) or decoded != text:
        raise OracleEncodingError(
            f"the oracle's tokenizer cannot encode {where} {text!r} exactly (it decodes back to {decoded!r}"
            f"{', with the unknown token' if unk is not None and unk in ids else ''}); use an oracle whose "
            "tokenizer covers the student's text (a byte-level BPE does), or a student that writes only text it can spell"
        )
    return ids


class HFOracle:
    """A local Hugging Face causal LM as the oracle (the demo's model teacher, any model directory)."""

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", batch_tokens: int = 16_384):
        from omniopd.models.loading import load_causal_lm, load_tokenizer

        if not Path(model_dir).is_dir():
            raise FileNotFoundError(f"oracle model directory not found: {model_dir} (pass --oracle DIR)")
        self.model_dir = str(model_dir)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.model = load_causal_lm(self.model_dir, dtype="float32", device=device)
        self.batch_tokens = batch_tokens

    def score(self, contexts: Sequence[str], chunks: Sequence[str]) -> list[OracleScore]:
        """Teacher log-probabilities of each chunk after its context (see the module docstring)."""
        from omniopd.rollout.scoring import score_completions

        pairs = []
        for i, (context, chunk) in enumerate(zip(contexts, chunks, strict=True)):
            context_ids = list(self.tokenizer(context)["input_ids"])  # as the teacher's server tokenizes a prompt
            pairs.append((context_ids, encode_chunk(self.tokenizer, chunk, where=f"chunk {i}")))
        scores = score_completions(self.model, pairs, batch_tokens=self.batch_tokens)
        return [OracleScore([float(x) for x in s.logprobs]) for s in scores]


class ServerOracle:
    """An open-weight teacher behind an OpenAI-compatible server as the oracle (vLLM for models
    too large for this machine): one `/v1/completions` request per chunk with the token ids of
    context + chunk as the prompt (tokenized here, as `HFOracle` does), `echo: true`,
    `logprobs: 0` and `max_tokens: 1`; the prompt tokens' log-probabilities come back in
    `choices[0].logprobs.token_logprobs` (vLLM's echo). A server that refuses token-id
    prompts or returns no prompt log-probabilities raises `OracleRefusedError`."""

    def __init__(self, base_url: str, model: str, tokenizer_dir: str | Path, *, api_key: str | None = None,
                 timeout_s: float = 120.0):
        from omniopd.models.loading import load_tokenizer

        self.url = f"{base_url.rstrip('/')}/completions"
        self.model = model
        self.tokenizer = load_tokenizer(str(tokenizer_dir))
        self.api_key = api_key
        self.timeout_s = timeout_s

    def _post(self, body: dict) -> tuple[int, dict | str]:
        import json
        import urllib.error
        import urllib.request

        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")[:300]

    def score(self, contexts: Sequence[str], chunks: Sequence[str]) -> list[OracleScore]:
        scores = []
        for i, (context, chunk) in enumerate(zip(contexts, chunks, strict=True)):
            context_ids = list(self.tokenizer(context)["input_ids"])
            chunk_ids = encode_chunk(self.tokenizer, chunk, where=f"chunk {i}")
            status, body = self._post({"model": self.model, "prompt": context_ids + chunk_ids, "max_tokens": 1,
                                       "echo": True, "logprobs": 0, "temperature": 0.0})
            try:
                values = body["choices"][0]["logprobs"]["token_logprobs"]  # type: ignore[index]
                chosen = values[len(context_ids) : len(context_ids) + len(chunk_ids)]
                if len(chosen) != len(chunk_ids) or any(v is None for v in chosen):
                    raise TypeError("missing entries")
            except (TypeError, KeyError, IndexError) as exc:
                raise OracleRefusedError(
                    f"the oracle server {self.url} (model {self.model!r}) returned no prompt log-probabilities for "
                    f"chunk {i} (HTTP {status}: {str(body)[:200]}; {exc}); the study needs a server that scores a "
                    "token-id prompt with echo=true and logprobs (vLLM's OpenAI-compatible server does), or pass "
                    "--oracle MODEL_DIR to score with local weights"
                ) from None
            scores.append(OracleScore([float(v) for v in chosen]))
        return scores
