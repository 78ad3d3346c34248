"""AdamW and its learning-rate schedule: linear warm-up, then constant, cosine or linear decay.

The schedule is a pure function of the step (`lr_multiplier`), wrapped in a LambdaLR so
its state saves and restores with the optimizer's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch

Schedule = Literal["constant", "cosine", "linear"]


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int, schedule: Schedule) -> float:
    """Factor on the base learning rate for optimizer step `step` (0-based: the first update
    uses step 0). Warm-up ramps linearly from 1/(warmup+1) to 1; decays reach 0 at total_steps."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"learner.schedule must be constant, cosine or linear, got {schedule!r}")


def build_optimizer(
    params: Iterable[torch.nn.Parameter], *, lr: float, betas: tuple[float, float], weight_decay: float
) -> torch.optim.AdamW:
    params = list(params)
    if not params:
        raise ValueError("no trainable parameters (LoRA target_modules matched nothing?)")
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, schedule: Schedule
) -> torch.optim.lr_scheduler.LambdaLR:
    lr_multiplier(0, warmup_steps=warmup_steps, total_steps=total_steps, schedule=schedule)  # validates
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_multiplier(
            step, warmup_steps=warmup_steps, total_steps=total_steps, schedule=schedule
        ),
    )
