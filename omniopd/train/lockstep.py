"""Keeping the ranks of a multi-process learner in step.

Rank 0 runs the learner loop (store, driver, broker, checkpoint directory) with a `Leader`
in place of its Trainer: every call that needs the other ranks — a step, a checkpoint —
is broadcast as a command first, then run. The other ranks never see the store; they
`follow`, running the same calls on the same arguments, until rank 0 says stop:

    rank 0:   start = Start(); ...store set up...; start.send(resumed)
              leader = Leader(build_trainer(config, resume=resumed)); Learner(trainer=leader).run()
              leader.close()                      # start.cancel() instead if it failed before send
    rank k:   resumed = wait_for_start(); follow(build_trainer(config, resume=resumed))

Messages (pickled through `broadcast_object`): ("start", checkpoint to resume or None)
once, when rank 0 has set up the store and chosen the checkpoint; then ("step", examples) — the claimed batch,
each rank trains on its share; ("save", root, policy_version, meta) — the state is
gathered collectively and rank 0 writes it; ("stop",).

Failure: if rank 0 fails between commands, `close` still sends stop and the followers
return. If it fails inside a step or a save, the others are inside a collective with it;
torchrun then stops them when rank 0 exits (its elastic agent ends every worker of a group
when one fails), and the restart resumes from the last checkpoint as in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omniopd.train.distributed import broadcast_object

if TYPE_CHECKING:
    from omniopd.objectives.examples import TrainExample
    from omniopd.train.checkpoint import CheckpointInfo
    from omniopd.train.step import StepMetrics
    from omniopd.train.trainer import Trainer

log = logging.getLogger(__name__)


class Start:
    """Rank 0's start message — the checkpoint every rank resumes from — and the hand-over of
    the followers to a Leader (`lead`). Until then, `cancel` tells them to stop, so a rank 0
    that fails while setting up releases them. One process: nothing is ever sent."""

    def __init__(self, distributed: bool) -> None:
        self.owes_followers = distributed  # they wait for a message that only we will send

    def send(self, resumed: CheckpointInfo | None) -> None:
        if self.owes_followers:
            broadcast_object(("start", resumed))

    def lead(self, trainer: Trainer) -> Trainer | Leader:
        """The trainer for rank 0's loop: a Leader of the followers (which then owes them the
        stop), or `trainer` itself in one process."""
        if not self.owes_followers:
            return trainer
        self.owes_followers = False
        return Leader(trainer)

    def cancel(self) -> None:
        """Stop the followers if no Leader took them over (harmless to repeat)."""
        if self.owes_followers:
            self.owes_followers = False
            broadcast_object(("stop",))


def wait_for_start() -> tuple[bool, CheckpointInfo | None]:
    """A follower's first message: (True, checkpoint to resume or None), or (False, None)
    when rank 0 failed before training began (its own error says why)."""
    message = broadcast_object()
    return (True, message[1]) if message[0] == "start" else (False, None)


class Leader:
    """Rank 0's Trainer under several processes: the Trainer's interface, each collective call
    announced to the followers first. `close` (once) releases them."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self._closed = False
        self._in_flight = False  # inside a collective call: the followers cannot take a stop now

    @property
    def steps_done(self) -> int:
        return self.trainer.steps_done

    @property
    def needs_teacher_text(self) -> bool:
        return self.trainer.needs_teacher_text

    @property
    def needs_groups(self) -> bool:
        return self.trainer.needs_groups

    @property
    def models(self):
        return self.trainer.models

    def _call(self, command: tuple, run):
        if self._closed:
            raise RuntimeError("the followers were already told to stop")
        self._in_flight = True
        broadcast_object(command)
        result = run()
        self._in_flight = False
        return result

    def step(self, examples: Sequence[TrainExample]) -> StepMetrics:
        examples = list(examples)
        return self._call(("step", examples), lambda: self.trainer.step(examples))

    def save(self, root: str | Path, *, policy_version: int, meta: dict | None = None) -> CheckpointInfo:
        info = self._call(("save", str(root), policy_version, meta),
                          lambda: self.trainer.save(root, policy_version=policy_version, meta=meta))
        assert info is not None, "rank 0 writes the checkpoint"
        return info

    def close(self) -> bool:
        """Tell the followers to stop; False (nothing sent) if already closed or if a collective
        call failed midway (the followers are stuck in it; torchrun ends them)."""
        if self._closed or self._in_flight:
            return False
        broadcast_object(("stop",))
        self._closed = True
        return True


def follow(trainer: Trainer) -> int:
    """A non-zero rank's loop: run rank 0's commands until it says stop; returns the steps
    taken. Never touches the store, the broker or the checkpoint directory itself."""
    steps = 0
    while True:
        command: Any = broadcast_object()
        kind = command[0]
        if kind == "stop":
            return steps
        if kind == "step":
            trainer.step(command[1])
            steps += 1
        elif kind == "save":
            _, root, version, meta = command
            trainer.save(root, policy_version=version, meta=meta)
        else:
            raise RuntimeError(f"unknown learner command {kind!r} from rank 0 (ranks running different versions?)")
