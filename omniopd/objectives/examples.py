"""What the learner trains on: audit bundles as plain records (no store types here).

The store's `Bundle` (db/repo_bundles.py) is converted into a `TrainExample` by the learner
process (workers/learner/loop.py); this package never imports db/. Only chunks that ended
`audited` carry a k_sem and hence a proxy (Eq. 5). Chunks that ended `skipped_budget` or
`failed` have no teacher evidence: they are left out of `chunks`, so their tokens are
un-audited — members of U in Eq. 8, covered by the KL anchor like every other token the
teacher never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class AuditedChunk:
    """One audited chunk: completion tokens [start, end), k_sem (Eq. 3) over n continuations.

    Invariant: 0 <= start < end; 0 <= k_sem <= n; n >= 1. `teacher_texts` are the n
    continuations as the teacher returned them — needed only by the SFT baseline (Eq. 19),
    empty when not loaded.
    """

    start: int
    end: int
    k_sem: float
    n: int
    teacher_texts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"chunk span [{self.start}, {self.end}) is empty or negative")
        if self.n < 1 or not 0.0 <= self.k_sem <= self.n:
            raise ValueError(f"chunk needs n >= 1 and 0 <= k_sem <= n; got k_sem={self.k_sem}, n={self.n}")


@dataclass(frozen=True)
class RewardGroup:
    """The rule-based rewards of the samples of one prompt that a step trains together
    (GRPO's group), and which of them is this example's.

    Invariant: 0 <= index < len(rewards). Members whose reward failed are not in it (they
    are never trained on), so a group may be smaller than rollout.samples_per_prompt.
    """

    rewards: tuple[float, ...]
    index: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < len(self.rewards):
            raise ValueError(f"group index {self.index} outside its {len(self.rewards)} rewards")

    @property
    def reward(self) -> float:
        return self.rewards[self.index]

    @property
    def all_equal(self) -> bool:
        """Every member has the same reward: the group's advantages are all zero."""
        return all(r == self.rewards[0] for r in self.rewards)


@dataclass(frozen=True)
class TrainExample:
    """One trajectory of a learner batch.

    Invariant: prompt_ids is not empty (the first completion token needs a context);
    chunks are sorted, disjoint and inside [0, len(completion_ids)); `sampled_logprobs`
    is empty or has one entry per completion token (log-probabilities under the policy that
    sampled it: GRPO's pi_theta_old). `key` identifies the example for logging (the
    trajectory id). `group` is set for objectives that need rewards (GRPO).
    """

    key: int
    prompt_ids: Sequence[int]
    completion_ids: Sequence[int]
    chunks: tuple[AuditedChunk, ...] = ()
    sampled_logprobs: Sequence[float] = ()
    group: RewardGroup | None = None

    def __post_init__(self) -> None:
        if len(self.prompt_ids) == 0:
            raise ValueError(f"example {self.key}: empty prompt (no context for the first token)")
        previous_end = 0
        for c in self.chunks:
            if c.start < previous_end or c.end > len(self.completion_ids):
                raise ValueError(
                    f"example {self.key}: chunk [{c.start}, {c.end}) overlaps the previous one or "
                    f"leaves the completion [0, {len(self.completion_ids)})"
                )
            previous_end = c.end
        if len(self.sampled_logprobs) not in (0, len(self.completion_ids)):
            raise ValueError(
                f"example {self.key}: {len(self.sampled_logprobs)} sampled log-probabilities for "
                f"{len(self.completion_ids)} completion tokens"
            )


@dataclass(frozen=True)
class Row:
    """One sequence of a forward pass: context, then the tokens the loss is about.

    `response` are the loss-bearing tokens (the student's completion for OmniOPD and
    white-box OPD; one teacher continuation for SFT); `chunks` are audited spans relative to
    `response` (OmniOPD only). `example` is the key of the TrainExample it came from.
    GRPO rows also carry the response's `sampled_logprobs` (one per response token) and
    the example's reward `group`.
    """

    example: int
    context: Sequence[int]
    response: Sequence[int]
    chunks: tuple[AuditedChunk, ...] = ()
    sampled_logprobs: Sequence[float] = ()
    group: RewardGroup | None = None
