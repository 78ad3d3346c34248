"""The store's tables (SQLAlchemy 2.0 typed models); `Base.metadata` is the whole schema."""

from db.models.base import Base, utcnow
from db.models.core import (
    CHUNK_STATES,
    CHUNK_TERMINAL,
    ENTROPY_SOURCES,
    RUN_STATUSES,
    TRAJECTORY_STATES,
    Chunk,
    LearnerStep,
    PolicyVersion,
    Problem,
    Run,
    TeacherSample,
    Trajectory,
)
from db.models.evals import EVAL_STATUSES, EvalResult, EvalRun
from db.models.outbox import OutboxMessage
from db.models.rollouts import BATCH_STATES, RolloutBatch, RolloutSlot
from db.models.spend import (
    CALL_STATUSES,
    RESERVATION_STATES,
    RUN_SCOPE,
    Budget,
    Reservation,
    TeacherCall,
)

__all__ = [
    "BATCH_STATES",
    "CALL_STATUSES",
    "CHUNK_STATES",
    "CHUNK_TERMINAL",
    "ENTROPY_SOURCES",
    "EVAL_STATUSES",
    "RESERVATION_STATES",
    "RUN_SCOPE",
    "RUN_STATUSES",
    "TRAJECTORY_STATES",
    "Base",
    "Budget",
    "Chunk",
    "EvalResult",
    "EvalRun",
    "LearnerStep",
    "OutboxMessage",
    "PolicyVersion",
    "Problem",
    "Reservation",
    "RolloutBatch",
    "RolloutSlot",
    "Run",
    "TeacherCall",
    "TeacherSample",
    "Trajectory",
    "utcnow",
]
