"""The Trainer: models + objective + AdamW + schedule + step counter, and its checkpoints.

    trainer = build_trainer(config, resume=latest_checkpoint(root))   # or Trainer(...)
    metrics = trainer.step(examples)            # one optimizer update (StepMetrics)
    info = trainer.save(root, policy_version=v) # atomic HF-layout checkpoint + state

Under several processes (distributed.py) every rank builds the same Trainer over its shards
and calls `step` with the same examples (each trains on its share) and `save` at the same
time (the state is gathered collectively; rank 0 writes it). lockstep.py keeps them in step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from omniopd.objectives import Objective, make_objective
from omniopd.objectives.examples import TrainExample
from omniopd.train.checkpoint import (
    CheckpointInfo,
    load_trainer_state,
    merged_lora_state,
    save_checkpoint,
    untied_state,
)
from omniopd.train.distributed import current, full_state
from omniopd.train.models import PolicyModels, load_policy_models, pad_token_id
from omniopd.train.optim import build_optimizer, build_scheduler
from omniopd.train.settings import TrainSettings, model_spec, train_settings
from omniopd.train.step import (
    StepMetrics,
    StepTimings,
    accumulate_gradients,
    apply_update,
    build_rows,
    merge_ranks,
    rank_rows,
    sync_device,
)

if TYPE_CHECKING:
    from omniopd.config import OmniConfig


class Trainer:
    """One learner's training state. `steps_done` counts optimizer updates over the whole run
    (restored from a checkpoint); `step()` performs update number steps_done + 1."""

    def __init__(self, models: PolicyModels, settings: TrainSettings, *, objective: Objective | None = None,
                 steps_done: int = 0) -> None:
        self.models = models
        self.settings = settings.with_pad_id(pad_token_id(models.tokenizer))
        self.objective = objective or make_objective(settings.method, settings.loss.sft_source)
        if self.objective.needs.reference(settings.loss.beta) and not models.reference_needed:
            raise ValueError("this objective needs a reference model (beta > 0) but none was loaded")
        self.params = models.trainable_parameters()
        self.optimizer = build_optimizer(
            self.params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay
        )
        self.scheduler = build_scheduler(
            self.optimizer, warmup_steps=settings.warmup_steps, total_steps=settings.max_steps,
            schedule=settings.schedule,
        )
        self.steps_done = steps_done
        self.world = current() if models.sharded else None  # None: one process

    @property
    def needs_teacher_text(self) -> bool:
        """Claim bundles with their continuations' texts (the objective's `needs.teacher_texts`)."""
        return self.objective.needs.teacher_texts

    @property
    def needs_groups(self) -> bool:
        """Claim whole groups with their rewards (the objective's `needs.groups`)."""
        return self.objective.needs.groups

    def step(self, examples: Sequence[TrainExample]) -> StepMetrics:
        """One optimizer update on `examples` (split into grad_accum micro-batches)."""
        if not examples:
            raise ValueError("a learner step needs at least one example")
        t0 = time.perf_counter()
        s = self.settings
        if self.world is None:
            micro_rows = build_rows(self.objective, examples, self.models.tokenizer, s.grad_accum)
            acc = accumulate_gradients(self.objective, self.models, micro_rows, s.loss, s.normalisation)
        else:  # this rank's share; the normaliser and the statistics are the whole batch's
            micro_rows, every_row = rank_rows(
                self.objective, examples, self.models.tokenizer, s.grad_accum, self.world.rank, self.world.size
            )
            acc = accumulate_gradients(
                self.objective, self.models, micro_rows, s.loss, s.normalisation,
                batch_rows=every_row, filler=every_row[0] if every_row else None,
            )
            acc = merge_ranks(acc)
        sync_device(self.models)
        t1 = time.perf_counter()
        grad_norm, lr = apply_update(self.params, self.optimizer, self.scheduler, s.grad_clip)
        sync_device(self.models)
        t2 = time.perf_counter()
        self.steps_done += 1
        result = self.objective.metrics(acc.stats, acc.norm, s.loss.beta)
        return StepMetrics(
            step=self.steps_done,
            method=s.method,
            loss=result.loss,
            kl=result.kl,
            parts=result.parts,
            examples=len(examples),
            rows=acc.rows,
            loss_tokens=acc.loss_tokens,
            forward_tokens=acc.forward_tokens,
            micro_batches=len(micro_rows),
            grad_norm=grad_norm,
            lr=lr,
            timings=StepTimings(acc.forward_s, acc.backward_s, t2 - t1, t2 - t0),
        )

    def save(self, root: str | Path, *, policy_version: int, meta: dict | None = None) -> CheckpointInfo | None:
        """Checkpoint after `steps_done` updates, to be published as `policy_version`.
        Several processes: collective (every rank calls it); rank 0 writes and returns the
        checkpoint, the others return None."""
        m = self.models
        optimizer_state = None
        if self.world is None:
            state, config = merged_lora_state(m.student) if m.lora else untied_state(m.student)
        else:  # full tensors gathered onto rank 0's CPU, one at a time; the format of one process
            keep = self.world.is_main
            gathered = full_state(m.student.state_dict(), keep=keep)
            optimizer_state = full_state(self.optimizer.state_dict(), keep=keep)
            if not keep:
                return None
            state, config = untied_state(m.student, state=gathered)
        base = m.base_model()
        return save_checkpoint(
            root,
            step=self.steps_done,
            policy_version=policy_version,
            model_state=state,
            model_config=config,
            optimizer=self.optimizer,
            optimizer_state=optimizer_state,
            scheduler=self.scheduler,
            generation_config=getattr(base, "generation_config", None),
            tokenizer=m.tokenizer,
            adapter_model=m.student if m.lora else None,
            student_tied=m.student_tied,
            meta={"method": self.settings.method, **(meta or {})},
        )

    def restore(self, info: CheckpointInfo) -> None:
        """Optimizer, schedule, RNG and step count from `info` (weights: load_policy_models)."""
        load_trainer_state(info, self.optimizer, self.scheduler, shard=self.world is not None)
        self.steps_done = info.step


def build_trainer(config: OmniConfig, *, resume: CheckpointInfo | None = None) -> Trainer:
    """The configured learner, fresh or resumed from checkpoint `resume`."""
    spec = model_spec(config)
    if resume is not None and resume.lora != (spec.lora is not None):
        raise ValueError(
            f"checkpoint {resume.path} was written by a {'LoRA' if resume.lora else 'full fine-tuning'} "
            "run; learner.lora.enabled must match to resume it"
        )
    models = load_policy_models(
        spec,
        weights_from=resume.path if resume is not None and not resume.lora else None,
        adapter_from=resume.adapter_dir if resume is not None and resume.lora else None,
    )
    trainer = Trainer(models, train_settings(config, device=str(models.device)))
    if resume is not None:
        trainer.restore(resume)
    return trainer
