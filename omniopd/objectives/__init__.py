"""The training objectives behind `loss.method`: one class per objective, one registry.

    base.py          Objective (the Protocol), Needs (what an objective declares it needs),
                     LossSettings, Stats, MicroLoss, ObjectiveMetrics, normaliser
    omniopd.py       OmniOPD             Eq. 8     audits, KL anchor
    sft.py           SFT                 Eq. 1/19  audits + their texts (sft_source: continuations)
                     SFTOnTrajectories   Eq. 1     nothing (sft_source: trajectories)
    opd_whitebox.py  WhiteboxOPD         Eq. 2     teacher logits
    grpo.py          GRPO                DeepSeekMath Eq. 3/4   rewards, groups (KL anchor if beta > 0)
    examples.py      TrainExample (a bundle as the learner sees it) and Row (one sequence)
    collate.py       rows -> one padded batch with its chunk layout (torch; loaded lazily)

`OBJECTIVES` is the only list of objectives. Config validation accepts exactly its keys;
the rollout task (audit or promote straight to `ready`), scripts/start_workers.sh (audit
workers or none), the learner (reference, white-box teacher, claims with samples) and
`omniopd worker audit` read the chosen class's `needs` (`objective_class`), never its name.
Importable without torch (base.py says how). Adding an objective: docs/learner.md.
"""

from __future__ import annotations

from omniopd.objectives.base import (
    LossSettings,
    MicroLoss,
    Needs,
    Objective,
    ObjectiveMetrics,
    SftSource,
    Stats,
    normaliser,
)
from omniopd.objectives.grpo import GRPO
from omniopd.objectives.omniopd import OmniOPD
from omniopd.objectives.opd_whitebox import WhiteboxOPD
from omniopd.objectives.sft import SFT, SFTOnTrajectories

OBJECTIVES: dict[str, type[Objective]] = {
    "omniopd": OmniOPD,
    "sft": SFT,
    "opd_whitebox": WhiteboxOPD,
    "grpo": GRPO,
}
"""loss.method -> the class that trains it."""


def objective_class(method: str, sft_source: SftSource = "continuations") -> type[Objective]:
    """The class that trains `method` under `sft_source`: OBJECTIVES[method], except that
    `sft` with `sft_source: trajectories` is SFTOnTrajectories (no audits, no teacher texts).
    This is the one place where a config option, not the method alone, picks the class,
    and so what a run needs."""
    if method not in OBJECTIVES:
        raise ValueError(f"loss.method {method!r}: expected one of {', '.join(OBJECTIVES)}")
    if sft_source not in ("continuations", "trajectories"):
        raise ValueError(f"sft source must be continuations or trajectories, got {sft_source!r}")
    cls = OBJECTIVES[method]
    return SFTOnTrajectories if cls is SFT and sft_source == "trajectories" else cls


def make_objective(method: str, sft_source: SftSource = "continuations") -> Objective:
    """An instance of `objective_class(method, sft_source)` for the learner step."""
    return objective_class(method, sft_source)()


__all__ = [
    "GRPO",
    "OBJECTIVES",
    "SFT",
    "LossSettings",
    "MicroLoss",
    "Needs",
    "Objective",
    "ObjectiveMetrics",
    "OmniOPD",
    "SFTOnTrajectories",
    "SftSource",
    "Stats",
    "WhiteboxOPD",
    "make_objective",
    "normaliser",
    "objective_class",
]
