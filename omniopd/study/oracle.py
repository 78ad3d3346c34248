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
