"""The invariants a chaos run must keep, each checked against the store with its counts.

    trained at most once     every consumed bundle belongs to exactly one recorded step
    every paid attempt       the teacher's own bill (the emulator's log priced at the
      in the ledger          teacher's price) never exceeds the ledger, and every request
                             it received has a ledger row
    caps                     spent <= cap and spent + reserved <= cap for every budget, at
                             every sampled instant (a provider billing above the worst case
                             may cross once; the alarm must stop it there)
    no open reservation      none left `reserved` once the run is over
    an outcome with a reason the run finished, or stopped saying why
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Budget, LearnerStep, Reservation, TeacherCall, Trajectory
from db.repo_budget import budgets


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    counts: str  # what was counted, in words


@dataclass
class CapSampler:
    """Budget rows sampled while the run goes on."""

    samples: int = 0
    violations: int = 0
    worst: str = ""

    def sample(self, session: Session, run_id: int) -> None:
        self.samples += 1
        for b in budgets(session, run_id=run_id):
            if b.cap is not None and (b.spent > b.cap or b.spent + b.reserved > b.cap):
                self.violations += 1
                self.worst = f"{b.provider}: spent {b.spent} + reserved {b.reserved} > cap {b.cap} micro-USD"


def trained_at_most_once(session: Session, run_id: int) -> Check:
    consumed = session.scalar(select(func.count()).select_from(Trajectory).where(
        Trajectory.run_id == run_id, Trajectory.state == "consumed")) or 0
    in_steps = session.scalar(select(func.coalesce(func.sum(LearnerStep.n_bundles), 0)).where(
        LearnerStep.run_id == run_id)) or 0
    orphans = session.scalar(select(func.count()).select_from(Trajectory).where(
        Trajectory.run_id == run_id, Trajectory.state == "consumed",
        ~Trajectory.consumed_step.in_(select(LearnerStep.step).where(LearnerStep.run_id == run_id)))) or 0
    steps = session.scalar(select(func.count()).select_from(LearnerStep).where(LearnerStep.run_id == run_id)) or 0
    return Check("every trajectory trained at most once", consumed == in_steps and orphans == 0,
                 f"{consumed} bundles consumed, {in_steps} in {steps} recorded steps, {orphans} consumed by no step")


def paid_attempts_in_ledger(session: Session, run_id: int, *, requests: int, billed_micros: int) -> Check:
    """Every request has its ledger row, and the ledger charges at least what the teacher
    billed. One exception, stated in the counts: a teacher that bills above the worst case
    makes an attempt of unknown outcome (charged at R) cost more than R, which no ledger
    can know; then the overbilling alarm must have stopped it."""
    rows, charged = session.execute(select(func.count(), func.coalesce(func.sum(TeacherCall.cost_micros), 0)).where(
        TeacherCall.run_id == run_id)).one()
    alarmed = bool(session.scalar(select(func.count()).select_from(Budget).where(
        Budget.run_id == run_id, Budget.alarm.is_not(None))))
    counts = (f"teacher received {requests} requests billing {billed_micros} micro-USD; ledger {rows} attempts "
              f"charging {charged} micro-USD")
    if billed_micros > charged and alarmed:
        counts += (f"; {billed_micros - charged} micro-USD billed above the worst case of attempts of unknown outcome "
                   "by an overbilling teacher, which the alarm stopped")
    return Check("every paid attempt is in the ledger", requests <= rows and (billed_micros <= charged or alarmed), counts)


def caps_kept(sampler: CapSampler, session: Session, run_id: int) -> Check:
    sampler.sample(session, run_id)  # and once more at the end
    alarms = session.scalar(select(func.count()).select_from(Budget).where(
        Budget.run_id == run_id, Budget.alarm.is_not(None))) or 0
    detail = f"{sampler.samples} samples of every budget, {sampler.violations} over a cap"
    if sampler.worst:
        detail += f" ({sampler.worst})"
    return Check("spend never exceeded any cap at any sampled instant", sampler.violations == 0,
                 detail + f"; {alarms} overbilling alarm(s)")


def no_open_reservation(session: Session, run_id: int) -> Check:
    open_ = session.scalar(select(func.count()).select_from(Reservation).where(
        Reservation.run_id == run_id, Reservation.state == "reserved")) or 0
    expired = session.scalar(select(func.count()).select_from(Reservation).where(
        Reservation.run_id == run_id, Reservation.state == "expired")) or 0
    total = session.scalar(select(func.count()).select_from(Reservation).where(Reservation.run_id == run_id)) or 0
    return Check("no reservation is left open", open_ == 0,
                 f"{total} reservations, {open_} open, {expired} expired by maintenance (charged in full)")


def outcome(finished: bool, reason: str) -> Check:
    return Check("the run finished or stopped naming the reason", finished, reason)
