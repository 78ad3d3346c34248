"""One learner step as a composition of small functions:

    rows         = build_rows(objective, examples, tokenizer)           # per example
    accumulated  = accumulate_gradients(objective, models, groups, ...)  # forward + backward per micro-batch
    update       = apply_update(params, optimizer, scheduler, clip)      # clip, AdamW, schedule
    metrics      = StepMetrics(...)                                      # typed record

Gradient accumulation: the examples are split into `grad_accum` micro-batches; every
micro-batch loss is a sum divided by one normaliser over the whole step
(omniopd/objectives/base.py), so the accumulated gradient equals the full batch's (to float
rounding).

Several processes (distributed.py): every rank gets the whole batch, computes the one
normaliser over all of its rows, and trains on its contiguous share of the examples
(`rank_rows`), always in `grad_accum` micro-batches so that every rank runs the same number
of forwards (an empty one runs the `filler` row with weight 0). FSDP sums the gradients,
and `merge_ranks` sums the statistics, so loss, metrics and update equal one process's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import torch

from omniopd.algo.losses import Normalisation
from omniopd.objectives import LossSettings, Objective, Stats, normaliser
from omniopd.objectives.examples import Row, TrainExample
from omniopd.train.distributed import full_tensor, gather_objects, share
from omniopd.train.models import PolicyModels


@dataclass(frozen=True)
class StepTimings:
    """Seconds spent: forward (model bodies, proxies, losses), backward, optimizer, whole step."""

    forward_s: float
    backward_s: float
    optimizer_s: float
    total_s: float


@dataclass(frozen=True)
class StepMetrics:
    """One optimizer step. `loss` is normalised as configured; `kl` is the mean
    KL(pi_ref || pi_theta) per un-audited token in nats (None when not computed: beta = 0 or
    a method without an anchor); `parts` are the method's named terms and statistics;
    `loss_tokens` carry loss, `forward_tokens` are the real tokens the student read."""

    step: int
    method: str
    loss: float
    kl: float | None
    parts: dict[str, float]
    examples: int
    rows: int
    loss_tokens: int
    forward_tokens: int
    micro_batches: int
    grad_norm: float
    lr: float
    timings: StepTimings

    @property
    def tokens_per_s(self) -> float:
        return self.forward_tokens / self.timings.total_s if self.timings.total_s > 0 else 0.0

    def as_dict(self) -> dict[str, float | int | str | None]:
        """Flat JSON-able view for the store and TensorBoard."""
        flat = {k: v for k, v in asdict(self).items() if k not in ("parts", "timings")}
        flat.update(self.parts)
        flat.update(asdict(self.timings))
        flat["tokens_per_s"] = self.tokens_per_s
        return flat


def split(items: Sequence, parts: int, *, keep_empty: bool = False) -> list[list]:
    """`items` in `parts` contiguous groups, sizes as equal as possible; empty groups dropped
    unless `keep_empty` (then exactly `parts` groups)."""
    if parts < 1:
        raise ValueError(f"grad_accum must be >= 1, got {parts}")
    size, extra = divmod(len(items), parts)
    groups, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        if end > start or keep_empty:
            groups.append(list(items[start:end]))
        start = end
    return groups


def build_rows(objective: Objective, examples: Sequence[TrainExample], tokenizer, groups: int) -> list[list[Row]]:
    """Rows of each micro-batch (an example's rows stay in its micro-batch)."""
    return [[row for ex in group for row in objective.rows(ex, tokenizer)] for group in split(examples, groups)]


def rank_rows(
    objective: Objective, examples: Sequence[TrainExample], tokenizer, groups: int, rank: int, size: int
) -> tuple[list[list[Row]], list[Row]]:
    """(this rank's `groups` micro-batches, possibly empty; every row of the whole batch).
    Ranks split the examples, not the rows, so an example's rows stay on one rank."""
    per_example = [objective.rows(ex, tokenizer) for ex in examples]
    mine = split(share(per_example, rank, size), groups, keep_empty=True)
    return [[row for rows in group for row in rows] for group in mine], [r for rows in per_example for r in rows]


@dataclass(frozen=True)
class Accumulated:
    stats: Stats
    norm: float
    rows: int
    loss_tokens: int
    forward_tokens: int
    forward_s: float
    backward_s: float


def accumulate_gradients(
    objective: Objective,
    models: PolicyModels,
    micro_rows: Sequence[Sequence[Row]],
    settings: LossSettings,
    normalisation: Normalisation,
    *,
    batch_rows: Sequence[Row] | None = None,
    filler: Row | None = None,
) -> Accumulated:
    """Forward and backward every micro-batch; gradients add up in the parameters' .grad.

    batch_rows: every row of the step when `micro_rows` are one rank's share (the normaliser
    is the whole batch's); filler: a row an empty micro-batch runs with weight 0, so this
    rank joins the collectives of the others' forward and backward."""
    all_rows = [row for rows in micro_rows for row in rows]
    norm = normaliser(all_rows if batch_rows is None else batch_rows, normalisation)
    stats, forward_tokens, forward_s, backward_s = Stats(), 0, 0.0, 0.0
    for rows in micro_rows:
        filling = not rows and filler is not None
        t0 = time.perf_counter()
        micro = objective.micro_loss(models, [filler] if filling else rows, settings)
        t1 = time.perf_counter()
        if micro.loss is not None:
            (micro.loss * 0.0 if filling else micro.loss / norm).backward()
        forward_s += t1 - t0
        backward_s += time.perf_counter() - t1
        if not filling:
            stats.add(micro.stats)
            forward_tokens += micro.forward_tokens
    return Accumulated(
        stats, norm, len(all_rows), sum(len(r.response) for r in all_rows), forward_tokens, forward_s, backward_s
    )


def merge_ranks(acc: Accumulated) -> Accumulated:
    """Every rank's statistics and token counts combined (collective; timings stay this rank's)."""
    stats = Stats()
    parts = gather_objects((acc.stats, acc.rows, acc.loss_tokens, acc.forward_tokens))
    for part in parts:
        stats.add(part[0])
    return replace(
        acc, stats=stats, rows=sum(p[1] for p in parts), loss_tokens=sum(p[2] for p in parts),
        forward_tokens=sum(p[3] for p in parts),
    )


def apply_update(
    params: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    grad_clip: float,
) -> tuple[float, float]:
    """Clip the global gradient norm, step AdamW and the schedule, clear the gradients.
    Returns (gradient norm before clipping, learning rate used)."""
    grad_norm = full_tensor(torch.nn.utils.clip_grad_norm_(params, grad_clip))  # sharded: a DTensor
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm), float(lr)


def sync_device(models: PolicyModels) -> None:
    """Wait for queued GPU work so timings measure it (no-op on CPU)."""
    if models.device.type == "cuda":
        torch.cuda.synchronize(models.device)
