"""Process-group facts and the one seam where the student would be sharded.

This version runs the learner as ONE process (one GPU, or CPU). The multi-GPU design
(docs/learner.md, "Scale-out") keeps every store write, the driver and every checkpoint
write on rank 0 and shards the student with FSDP2 inside `wrap_model`; until that is built
and tested, a launch with WORLD_SIZE > 1 is refused here with that explanation instead of
silently training N unsynchronised copies.
"""

from __future__ import annotations

import os

import torch


def world() -> tuple[int, int]:
    """(rank, world size) of this process: the initialised process group's, else
    torchrun's / accelerate's environment (RANK, WORLD_SIZE), else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0: the only process that talks to the store, the driver and the checkpoint dir."""
    return world()[0] == 0


def wrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The student as the step trains it. One process: the model itself. Several: refused
    (see the module docstring), naming what to do instead."""
    rank, size = world()
    if size > 1:
        raise RuntimeError(
            f"this process is rank {rank} of {size}: the OmniOPD learner runs as one process in this "
            "version (see docs/learner.md, Scale-out). Launch it without torchrun/accelerate, "
            "use LoRA (learner.lora.enabled) to fit a larger student on one GPU, or run several "
            "learners on separate runs"
        )
    return model
