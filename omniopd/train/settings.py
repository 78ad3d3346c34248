"""Config -> plain arguments of the learner step: the one place in omniopd/train that reads
`OmniConfig` (the step, objectives and models take plain values)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from omniopd.algo.losses import Normalisation
from omniopd.objectives import LossSettings
from omniopd.objectives.collate import Padding
from omniopd.train.models import LoraSpec, ModelSpec
from omniopd.train.optim import Schedule

if TYPE_CHECKING:
    from omniopd.config import OmniConfig


@dataclass(frozen=True)
class TrainSettings:
    """Everything one learner step needs besides the models and the batch."""

    method: str
    loss: LossSettings
    normalisation: Normalisation
    grad_accum: int
    grad_clip: float
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    warmup_steps: int
    schedule: Schedule
    max_steps: int

    def with_pad_id(self, pad_id: int) -> TrainSettings:
        return replace(self, loss=replace(self.loss, pad_id=pad_id))


def _autocast(config: OmniConfig, device: str) -> torch.dtype | None:
    # bf16 autocast only on GPU: CPU bf16 matmuls are slow and lossy (models/loading.py).
    return torch.bfloat16 if config.learner.bf16 and device.startswith("cuda") else None


def train_settings(config: OmniConfig, *, device: str, padding: Padding = "right") -> TrainSettings:
    lr, loss = config.learner, config.loss
    return TrainSettings(
        method=loss.method,
        loss=LossSettings(
            beta=loss.beta,
            alpha=config.estimator.alpha,
            token_slice=loss.kl_token_slice,
            vocab_slice=loss.kl_vocab_slice,
            padding=padding,
            autocast=_autocast(config, device),
            sft_source=loss.sft_source,
            normalisation=loss.normalisation,
            grpo_clip_low=loss.clip_low,
            grpo_clip_high=loss.clip_high,
            grpo_scale_rewards=loss.scale_rewards,
        ),
        normalisation=loss.normalisation,
        grad_accum=lr.grad_accum,
        grad_clip=lr.grad_clip,
        lr=lr.lr,
        betas=tuple(lr.betas),
        weight_decay=lr.weight_decay,
        warmup_steps=lr.warmup_steps,
        schedule=lr.schedule,
        max_steps=lr.max_steps,
    )


def model_spec(config: OmniConfig) -> ModelSpec:
    """Which networks the configured method needs (its objective's `needs`), and from where."""
    needs = config.loss.needs
    lora_cfg = config.learner.lora
    lora = None
    if lora_cfg.enabled:
        lora = LoraSpec(lora_cfg.r, lora_cfg.alpha, lora_cfg.dropout, tuple(lora_cfg.target_modules))
        if config.reference is not None and config.reference.path not in ("", config.student.path):
            raise ValueError(
                "learner.lora.enabled: the reference is the student with its adapters disabled; "
                f"remove `reference` (got reference.path = {config.reference.path!r})"
            )
    return ModelSpec(
        student_path=config.student.path,
        tokenizer_path=config.student.tokenizer,
        device=config.student.device,
        student_dtype=config.student.dtype,
        frozen_dtype=config.reference_model.dtype,
        reference_path=config.reference_model.path if needs.reference(config.loss.beta) else None,
        teacher_path=config.loss.whitebox_teacher if needs.teacher_logits else None,
        lora=lora,
    )
