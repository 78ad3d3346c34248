"""From rendered prompts to trajectory records ready for the store (docs/store.md, docs/rollout.md).

`rollout_batch` is what a rollout task calls: sample with the engine, score the samples
(exact source: one teacher-forced pass, Eq. 6; topk source: the engine's own top-k
logprobs), and return one `TrajectoryRecord` per sample. `build_trajectories` is the pure
part (generations + scores -> records), separately testable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from omniopd.algo.entropy import topk_entropy_estimate
from omniopd.rollout.base import FinishReason, Generation, RolloutEngine, Sampling, derive_seed
from omniopd.rollout.prompts import RenderedPrompt
from omniopd.rollout.scoring import TokenScores, score_completions

if TYPE_CHECKING:
    from omniopd.config import OmniConfig

EntropySource = Literal["exact", "topk"]


@dataclass(frozen=True)
class RolloutSettings:
    """The rollout knobs as plain values (built from `OmniConfig` by `from_config`)."""

    samples_per_prompt: int = 1
    max_new_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    entropy_source: EntropySource = "exact"
    topk: int = 20
    entropy_slice_tokens: int = 512
    seed: int = 0

    @classmethod
    def from_config(cls, config: OmniConfig) -> RolloutSettings:
        r = config.rollout
        return cls(
            samples_per_prompt=r.samples_per_prompt,
            max_new_tokens=r.max_new_tokens,
            temperature=r.temperature,
            top_p=r.top_p,
            stop=tuple(r.stop),
            entropy_source=r.entropy_source,
            topk=r.topk,
            entropy_slice_tokens=r.entropy_slice_tokens,
            seed=config.run.seed,
        )

    def sampling(self) -> Sampling:
        return Sampling(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=self.stop,
            topk_logprobs=self.topk if self.entropy_source == "topk" else 0,
        )


@dataclass(frozen=True)
class TrajectoryRecord:
    """One student sample, ready to be written to the store.

    Invariants: `token_ids`, `logprobs` and `entropies` have one length (the completion's;
    the prompt is `prompt_token_ids`); logprobs[t] = log pi(token_ids[t] | prompt,
    token_ids[<t]) and entropies[t] is H_t of Eq. 6 at that position, under the weights of
    `policy_version`, exactly (`entropy_source` "exact") or estimated from the engine's top-k
    (`"topk"`, a lower bound; see `topk_entropy_estimate`); `truncated == (finish_reason ==
    "length")`; `text == decode(token_ids, skip_special_tokens=True)`.
    """

    problem_id: str | int
    sample_index: int
    policy_version: int
    seed: int
    prompt_token_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    entropies: list[float]
    text: str
    finish_reason: FinishReason
    truncated: bool
    entropy_source: EntropySource

    def __post_init__(self) -> None:
        if not len(self.token_ids) == len(self.logprobs) == len(self.entropies):
            raise ValueError(
                f"problem {self.problem_id!r} sample {self.sample_index}: {len(self.token_ids)} tokens, "
                f"{len(self.logprobs)} logprobs, {len(self.entropies)} entropies (must be equal)"
            )
        if self.truncated != (self.finish_reason == "length"):
            raise ValueError(f"truncated={self.truncated} contradicts finish_reason={self.finish_reason!r}")


@dataclass(frozen=True)
class RolloutBatch:
    """The records of one batch and where its time went (for worker metrics and the benchmark)."""

    trajectories: list[TrajectoryRecord]
    generate_seconds: float
    score_seconds: float

    @property
    def completion_tokens(self) -> int:
        return sum(len(t.token_ids) for t in self.trajectories)


def topk_scores(generation: Generation) -> TokenScores:
    """Engine logprobs -> TokenScores: the sampled token's logprob and the top-k entropy estimate."""
    if generation.topk_logprobs is None or generation.sampled_logprobs is None:
        raise ValueError(
            f"prompt {generation.prompt_index} sample {generation.sample_index}: entropy_source topk "
            "needs engine logprobs; sample with Sampling(topk_logprobs=k)"
        )
    width = max((len(row) for row in generation.topk_logprobs), default=0)
    # Rows may be short (vocabulary < k); -inf pads are treated as absent tokens.
    table = torch.full((len(generation.token_ids), max(width, 1)), -math.inf, dtype=torch.float64)  # [T, k]
    for t, row in enumerate(generation.topk_logprobs):
        table[t, : len(row)] = torch.tensor(row, dtype=torch.float64)
    entropies = topk_entropy_estimate(table).tolist() if generation.token_ids else []
    return TokenScores(logprobs=list(generation.sampled_logprobs), entropies=entropies)


def build_trajectories(
    prompts: Sequence[RenderedPrompt],
    generations: Sequence[Generation],
    scores: Sequence[TokenScores],
    *,
    entropy_source: EntropySource,
    policy_version: int,
) -> list[TrajectoryRecord]:
    """Join generations with their scores (one per generation, same order) into records."""
    records = []
    for gen, score in zip(generations, scores, strict=True):
        records.append(
            TrajectoryRecord(
                problem_id=prompts[gen.prompt_index].problem_id,
                sample_index=gen.sample_index,
                policy_version=policy_version,
                seed=gen.seed,
                prompt_token_ids=list(gen.prompt_token_ids),
                token_ids=list(gen.token_ids),
                logprobs=list(score.logprobs),
                entropies=list(score.entropies),
                text=gen.text,
                finish_reason=gen.finish_reason,
                truncated=gen.truncated,
                entropy_source=entropy_source,
            )
        )
    return records


def rollout_batch(
    engine: RolloutEngine,
    prompts: Sequence[RenderedPrompt],
    settings: RolloutSettings,
    seeds: Sequence[int] | None = None,
) -> RolloutBatch:
    """Sample `settings.samples_per_prompt` completions per prompt and score them.

    Default seeds: derive_seed(settings.seed, problem_id, engine.policy_version), so a
    redelivered task regenerates the same trajectories whatever its batch mates.
    """
    if seeds is None:
        seeds = [derive_seed(settings.seed, p.problem_id, engine.policy_version) for p in prompts]
    t0 = time.perf_counter()
    generations = engine.generate(
        [p.token_ids for p in prompts], settings.samples_per_prompt, settings.sampling(), seeds
    )
    t1 = time.perf_counter()
    if settings.entropy_source == "exact":
        scores = score_completions(
            engine.scoring_model,
            [(g.prompt_token_ids, g.token_ids) for g in generations],
            slice_tokens=settings.entropy_slice_tokens,
        )
    else:
        scores = [topk_scores(g) for g in generations]
    t2 = time.perf_counter()
    records = build_trajectories(
        prompts, generations, scores, entropy_source=settings.entropy_source, policy_version=engine.policy_version
    )
    return RolloutBatch(trajectories=records, generate_seconds=t1 - t0, score_seconds=t2 - t1)
