"""The one interface every student generation backend implements (docs/rollout.md).

A backend samples; it does not score. Per-token log-probabilities and exact entropies
(Eq. 6) come from one teacher-forced torch forward of the same weights afterwards
(`scoring.py`), so both backends produce identical numbers for identical tokens. A
backend can also return its own top-k log-probabilities per position, for the cheaper
`entropy_source: topk`.

Conventions shared by both backends:
- `token_ids` are exactly the tokens the model sampled, up to and including the token that
  ended the sample (the EOS / end-of-turn token, or the token that completed a stop
  string). `text` is their decoding without special tokens, so `text` always equals
  `tokenizer.decode(token_ids, skip_special_tokens=True)`, stop strings included.
- `finish_reason` is "stop" (EOS, end-of-turn or a stop string) or "length" (ran into
  `max_new_tokens`); a "length" sample is truncated and says so — it is never dropped.
- Every sample has its own seed, recorded on the `Generation`. The same (weights, prompt,
  seed, sampling settings) give the same tokens on the same backend and device, whatever
  else is in the batch (up to float ties). The two backends use different random streams:
  the same seed gives different samples on hf and vllm.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Sampling:
    """How to sample: the knobs shared by both backends (values as in `RolloutConfig`)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    """Base seed; with no per-prompt seeds, prompt i uses `derive_seed(seed, i)`. None: fresh random seeds (still recorded)."""
    stop: tuple[str, ...] = ()
    """Extra stop strings; the EOS / end-of-turn tokens always stop."""
    topk_logprobs: int = 0
    """Ask the engine for its top-k raw log-probabilities at every position (0 = do not)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.topk_logprobs < 0:
            raise ValueError(f"topk_logprobs must be >= 0, got {self.topk_logprobs}")


@dataclass(frozen=True)
class Generation:
    """One sampled completion of one prompt.

    Invariants: `finish_reason` is "stop" or "length" and `truncated == (finish_reason ==
    "length")`; when the engine was asked for top-k logprobs, `sampled_logprobs` and
    `topk_logprobs` have one entry per token of `token_ids` (each `topk_logprobs[t]` holds k
    values, best first, from the raw temperature-1 distribution); otherwise both are None.
    """

    prompt_index: int
    sample_index: int
    seed: int
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: FinishReason
    sampled_logprobs: list[float] | None = None
    topk_logprobs: list[list[float]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.finish_reason not in ("stop", "length"):
            raise ValueError(f"finish_reason must be 'stop' or 'length', got {self.finish_reason!r}")
        for name in ("sampled_logprobs", "topk_logprobs"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.token_ids):
                raise ValueError(f"{name} has {len(values)} entries for {len(self.token_ids)} tokens")

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


def derive_seed(base: int, *keys: Any) -> int:
    """A stable 63-bit seed from a base seed and keys (problem id, sample index, ...).

    Stable across processes and Python versions (no `hash()`), so a redelivered rollout
    task regenerates the same samples.
    """
    digest = hashlib.blake2b(repr((base, *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def sample_seeds(n_prompts: int, n: int, sampling: Sampling, seeds: Sequence[int] | None) -> list[list[int]]:
    """Seeds [n_prompts][n]: sample j of prompt i uses derive_seed(prompt seed i, j)."""
    if seeds is None:
        if sampling.seed is None:
            seeds = [int.from_bytes(os.urandom(8), "little") & (2**63 - 1) for _ in range(n_prompts)]
        else:
            seeds = [derive_seed(sampling.seed, i) for i in range(n_prompts)]
    elif len(seeds) != n_prompts:
        raise ValueError(f"got {len(seeds)} seeds for {n_prompts} prompts (one per prompt)")
    return [[derive_seed(s, j) for j in range(n)] for s in seeds]


class RolloutEngine(ABC):
    """A student sampler holding one policy version, plus a torch model of the same weights.

    `scoring_model` is the causal LM used for the teacher-forced scoring pass and for
    probes; for hf it is the generating model itself, for vllm a second copy (see vllm.py).
    `policy_version` and `checkpoint` say which weights are loaded (set by
    `weights.load_version`).
    """

    backend: str
    tokenizer: Any
    policy_version: int
    checkpoint: str
    stop_token_ids: list[int]

    @abstractmethod
    def generate(
        self, prompts: Sequence[Sequence[int]], n: int, sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[Generation]:
        """n samples of each prompt (token ids), prompt-major: result[i * n + j] is sample j of prompt i.

        `seeds`: one per prompt (sample j uses derive_seed(seeds[i], j)); default from
        `sampling.seed`.
        """

    @property
    @abstractmethod
    def scoring_model(self) -> Any:
        """A transformers causal LM with the engine's current weights (teacher-forced passes)."""

    @abstractmethod
    def load_weights(self, checkpoint_dir: str) -> str:
        """Replace the weights with those of `checkpoint_dir` (HF layout); returns the method used.

        Callers use `weights.load_version`, which also checks and verifies the result.
        """

    @abstractmethod
    def probe_logprobs(self, token_ids: Sequence[int]) -> list[float]:
        """The sampler's own log pi(token_ids[t] | token_ids[<t]) for t >= 1 (len - 1 values)."""

    @abstractmethod
    def close(self) -> None:
        """Release the engine's processes and memory; idempotent."""

    def __enter__(self) -> RolloutEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
