"""Rule-based rewards in the rollout worker, for objectives that need them (`needs.rewards`).

After a batch is generated and before it is recorded, every sample is graded against its
problem with the configured grader (`reward.grader`, eval/rewards.py): the demo task's
checker, the eval harness's math grader, or the sandboxed code grader and its pool (one
sandbox per sample, during training). The reward goes into the trajectory's row
(`trajectories.reward`), in the same transaction as the trajectory itself, so a recorded
trajectory of such a run always has its reward or its failure.

A grader that raised or timed out on a sample fails that sample: the trajectory is still
recorded (its slot is filled, never re-issued forever) and then dropped with reason
`reward_failed` and the grader's message as the detail, so it is never trained on and
`omniopd status` counts it. The rest of its group trains without it.

The grader is built once per worker process (the math grader's processes and the code
sandbox's uid slots live as long as the worker) and closed at exit.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from omniopd.config import OmniConfig

if TYPE_CHECKING:
    from eval.rewards import RewardGrader
    from workers.rollout.records import GeneratedRecords

REWARD_FAILED = "reward_failed"
"""Drop reason of a trajectory whose reward could not be computed."""

_GRADER: tuple[tuple[int, str], RewardGrader] | None = None


def _grader(config: OmniConfig) -> RewardGrader:
    from eval.rewards import reward_grader_for

    global _GRADER
    key = (os.getpid(), config.reward.model_dump_json())
    if _GRADER is not None and _GRADER[0] != key:
        close_grader()
    if _GRADER is None:
        _GRADER = (key, reward_grader_for(config))
        atexit.register(close_grader)
    return _GRADER[1]


def close_grader(*_: Any, **__: Any) -> None:
    global _GRADER
    if _GRADER is not None and _GRADER[0][0] == os.getpid():
        grader, _GRADER = _GRADER[1], None
        grader.close()


def with_rewards(
    made: GeneratedRecords, references: Mapping[int, tuple[str | None, Any]], config: OmniConfig
) -> GeneratedRecords:
    """`made` with every trajectory's reward, or its failure in `reward_failures` (slot -> reason)."""
    from eval.rewards import RewardReference

    if not made.trajectories:
        return made
    refs = [RewardReference(t.problem_id, *references[t.problem_id]) for t in made.trajectories]
    outcomes = _grader(config).rewards([t.completion_text for t in made.trajectories], refs)
    trajectories, failures = [], {}
    for t, outcome in zip(made.trajectories, outcomes, strict=True):
        if outcome.failure is not None:
            failures[t.slot] = outcome.failure
            trajectories.append(t)
        else:
            meta = {**t.meta, "reward_detail": outcome.detail, "reward_s": round(outcome.seconds, 4)}
            trajectories.append(dataclasses.replace(t, reward=outcome.reward, meta=meta))
    return dataclasses.replace(made, trajectories=trajectories, reward_failures=failures)
