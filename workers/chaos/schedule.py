"""A seeded random fault schedule for one chaos run: which faults, when, and the caps.

Everything random is drawn here from `random.Random(seed)`, so a failing schedule is
replayed exactly by its seed (`omniopd chaos --seed S --schedules 1`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

PROCESS_FAULTS = ("kill learner", "kill rollout", "kill audit", "kill maintenance")
STORE_BROKER_FAULTS = ("restart redis", "kill db connections")
FAULT_KINDS = PROCESS_FAULTS + STORE_BROKER_FAULTS
"""What the harness itself injects; the teacher's faults are the emulator's (below)."""


@dataclass(frozen=True)
class Event:
    at_s: float  # seconds after the learner started
    kind: str  # one of FAULT_KINDS


@dataclass(frozen=True)
class Schedule:
    seed: int
    events: list[Event] = field(default_factory=list)
    teacher_faults: dict[str, Any] = field(default_factory=dict)  # EmulatorFaults fields
    requests_per_min: float | None = None  # the emulated teacher's rate limit (429s above it)
    teacher_cap_usd: float = 1.0
    run_cap_usd: float = 1.0
    overbilling: bool = False  # the teacher bills above the limits it is sent

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def draw_schedule(seed: int, *, window_s: float, mean_gap_s: float = 12.0) -> Schedule:
    """Faults at exponential gaps (mean `mean_gap_s`) over the first `window_s` seconds of
    training; a teacher with 5xx, timeouts, garbage and cut bodies at random rates, maybe
    rate limited, one run in six billing above its limits; caps tight in one run in three."""
    rng = random.Random(seed)
    events, t = [], rng.expovariate(1 / mean_gap_s)
    while t < window_s:
        events.append(Event(round(t, 2), rng.choice(FAULT_KINDS)))
        t += rng.expovariate(1 / mean_gap_s)
    faults = {
        "error_rate": round(rng.uniform(0, 0.15), 3),
        "timeout_rate": round(rng.uniform(0, 0.04), 3),
        "hang_s": 8.0,  # above the teacher's timeout_s: the client gives up (outcome unknown)
        "malformed_rate": round(rng.uniform(0, 0.04), 3),
        "truncated_rate": round(rng.uniform(0, 0.04), 3),
    }
    overbilling = rng.random() < 1 / 6
    if overbilling:
        faults["extra_billed_output_tokens"] = 64
    tight = rng.random() < 1 / 3
    return Schedule(
        seed=seed, events=events, teacher_faults=faults,
        requests_per_min=rng.choice([None, 600.0, 1200.0]),
        teacher_cap_usd=round(rng.uniform(0.004, 0.02), 4) if tight else 1.0,
        run_cap_usd=1.0, overbilling=overbilling,
    )
