"""The learner step: audit bundles -> loss (Eq. 8, or the SFT / white-box OPD baselines) ->
AdamW update, plus checkpoints rollout workers can reload. See docs/learner.md. The
objectives (their losses and what they need) live in omniopd/objectives.

    examples.py    TrainExample / AuditedChunk / Row: what is trained on (no store types)
    collate.py     rows -> padded, shifted Batch (prompt tokens carry no loss)
    forward.py     final hidden states + output layer as HiddenStates (no [B, T, V] logits)
    models.py      student / reference (frozen copy or LoRA-disabled) / white-box teacher
    step.py        accumulate_gradients, apply_update, StepMetrics
    optim.py       AdamW, warm-up + schedule
    checkpoint.py  atomic HF-layout (untied) checkpoints + optimizer / scheduler / RNG state
    settings.py    config -> plain arguments
    trainer.py     Trainer, build_trainer
    distributed.py several processes (torchrun): process group, FSDP2 shards, batch shares
    lockstep.py    rank 0 leads the loop, the other ranks follow its steps and saves
"""

from omniopd.objectives.examples import AuditedChunk, Row, TrainExample
from omniopd.train.checkpoint import (
    CheckpointInfo,
    checkpoint_root,
    clean_partial,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
)
from omniopd.train.step import StepMetrics, StepTimings
from omniopd.train.trainer import Trainer, build_trainer

__all__ = [
    "AuditedChunk",
    "CheckpointInfo",
    "Row",
    "StepMetrics",
    "StepTimings",
    "TrainExample",
    "Trainer",
    "build_trainer",
    "checkpoint_root",
    "clean_partial",
    "latest_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
]
