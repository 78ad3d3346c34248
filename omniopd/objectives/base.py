"""What every training objective is: a `Needs` declaration and three methods.

An objective declares, as the class attribute `needs`, what the rest of the pipeline must
give it; the pipeline reads only that declaration, never the objective's name:

    audits          rollout selects chunks (Eq. 7) and the audit workers get continuations;
                    without audits a trajectory is promoted straight to `ready`
    teacher_texts   the learner claims bundles with their continuations' texts
    kl_anchor       the loss has a KL(pi_ref || pi_theta) term: the frozen reference is
                    loaded when loss.beta > 0 (`Needs.reference`)
    teacher_logits  an open-weight teacher sharing the student's tokenizer is loaded
                    (loss.whitebox_teacher)
    rewards         rule-based rewards of the trajectories: the rollout worker grades every
                    sample with the configured grader (reward.grader, required by config
                    validation) and stores its reward; a sample whose grading raised or timed
                    out is dropped with the reason (`reward_failed`), never trained on
    groups          the learner claims and trains whole groups (the samples of one prompt),
                    each example carrying its group's rewards; a step's batch is
                    learner.batch_size / rollout.samples_per_prompt groups

The learner step (omniopd/train/step.py) calls `rows` per example, `micro_loss` per
micro-batch (a differentiable *sum* with additive statistics) and `metrics` once per step.
It divides every micro-batch's sum by one normaliser over the whole step (`normaliser`),
so gradient accumulation gives the full batch's gradient exactly, whatever the
normalisation:

    sum      -> 1                       (Eq. 8 as written, summed over the batch)
    sequence -> number of rows          (mean over trajectories; for SFT, Eq. 19's 1/N)
    token    -> number of response tokens in the step (audited + un-audited for Eq. 8)

This package is imported by omniopd/config.py, which must load without torch: the
objective modules import nothing at top level but this module (types only under
TYPE_CHECKING), and import their tensor code (torch, omniopd.algo, the rows of
examples.py and their padding in collate.py, both in this package) inside `rows` /
`micro_loss`, which only the learner calls. The package imports nothing above
omniopd.algo, so omniopd.train builds on it without a cycle (pyproject.toml's import
contracts check both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from omniopd.algo.losses import Normalisation
    from omniopd.objectives.collate import Padding
    from omniopd.objectives.examples import Row, TrainExample
    from omniopd.train.models import PolicyModels

SftSource = Literal["continuations", "trajectories"]


@dataclass(frozen=True)
class Needs:
    """What an objective needs from the pipeline (module docstring). Invariant: teacher
    texts come from audits, so `teacher_texts` implies `audits`."""

    audits: bool = False
    teacher_texts: bool = False
    kl_anchor: bool = False
    teacher_logits: bool = False
    rewards: bool = False
    groups: bool = False

    def __post_init__(self) -> None:
        if self.teacher_texts and not self.audits:
            raise ValueError("Needs(teacher_texts=True) needs audits=True: the texts are the audits' continuations")
        if self.groups and not self.rewards:
            raise ValueError("Needs(groups=True) needs rewards=True: a group is claimed with its rewards")

    def reference(self, beta: float) -> bool:
        """Is the frozen reference loaded? Only for a KL anchor with a weight: beta = 0
        (ablation 'w/o KL anchoring') never loads nor evaluates it."""
        return self.kl_anchor and beta > 0


@dataclass(frozen=True)
class LossSettings:
    """Plain arguments of the objectives (omniopd/train/settings.py builds them from the config)."""

    beta: float = 0.1
    alpha: float = 1.0
    token_slice: int = 512
    vocab_slice: int = 8192
    padding: Padding = "right"
    pad_id: int = 0
    autocast: torch.dtype | None = None
    sft_source: SftSource = "continuations"
    normalisation: Normalisation = "sum"
    grpo_clip_low: float = 0.2
    grpo_clip_high: float = 0.2
    grpo_scale_rewards: bool = True


@dataclass
class Stats:
    """Statistics of micro-batches: additive `sums`, running `mins` / `maxs`."""

    sums: dict[str, float] = field(default_factory=dict)
    mins: dict[str, float] = field(default_factory=dict)
    maxs: dict[str, float] = field(default_factory=dict)

    def add(self, other: Stats) -> None:
        for k, v in other.sums.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        for k, v in other.mins.items():
            self.mins[k] = min(self.mins.get(k, v), v)
        for k, v in other.maxs.items():
            self.maxs[k] = max(self.maxs.get(k, v), v)

    def get(self, key: str) -> float:
        return self.sums.get(key, 0.0)


@dataclass(frozen=True)
class MicroLoss:
    """One micro-batch: `loss` = its differentiable sum (None when it had no rows)."""

    loss: Tensor | None
    stats: Stats
    forward_tokens: int


@dataclass(frozen=True)
class ObjectiveMetrics:
    """A step's loss (normalised), its KL to the reference per un-audited token (None when
    not computed), and the method's named parts."""

    loss: float
    kl: float | None
    parts: dict[str, float]


@runtime_checkable
class Objective(Protocol):
    """A training objective: its declaration and the three calls of the learner step."""

    needs: ClassVar[Needs]

    def rows(self, example: TrainExample, tokenizer) -> list[Row]:
        """The rows one example trains on (none, one, or one per teacher continuation)."""
        ...

    def micro_loss(self, models: PolicyModels, rows: Sequence[Row], s: LossSettings) -> MicroLoss:
        """One micro-batch's loss under the "sum" normalisation, with additive statistics."""
        ...

    def metrics(self, st: Stats, norm: float, beta: float) -> ObjectiveMetrics:
        """The step's loss (sum / `norm`), KL and named parts from its summed statistics."""
        ...


def normaliser(rows: Sequence[Row], how: Normalisation) -> float:
    """The step-wide divisor of every micro-batch sum (module docstring)."""
    if how == "sum":
        return 1.0
    if how == "sequence":
        return float(max(len(rows), 1))
    if how == "token":
        return float(max(sum(len(r.response) for r in rows), 1))
    raise ValueError(f"normalisation must be 'sum', 'sequence' or 'token', got {how!r}")


def ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def completion_row(example: TrainExample) -> list[Row]:
    """The example's whole completion as one row after its prompt (none when it is empty)."""
    from omniopd.objectives.examples import Row

    return [Row(example.key, example.prompt_ids, example.completion_ids)] if len(example.completion_ids) else []
