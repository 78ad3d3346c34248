"""Learner-test helpers: audited bundles written straight into the store, and a fake driver.

`StoreDriver` implements the driver interface (`tick(trained_version=...)` -> report) without
rollout workers: the test has already put every bundle in the store, so the driver enqueues
nothing and reports `exhausted` once no bundle is left for the learner to wait for: none on
its way (generated / being audited) and none ready and unclaimed. Bundles the learner holds
(claimed, not yet consumed) are its own business, as with the real driver, whose
`exhausted` means no problems left to sample and none in flight. It is what `omniopd learner --driver tests.workers.learner_fakes:StoreDriver` loads.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from sqlalchemy import func, select

from db.models import Trajectory
from db.repo_audit import (
    TeacherSampleIn,
    add_teacher_samples,
    complete_chunk,
    fail_chunk,
    promote_if_complete,
)
from db.repo_bundles import count_claimable
from db.repo_trajectories import (
    ChunkIn,
    SlotKey,
    TrajectoryIn,
    drop_trajectories,
    record_trajectories,
)
from tests.db.conftest import make_problems

_SPLITS = itertools.count()


@dataclass(frozen=True)
class FakeReport:
    enqueued_batches: int = 0
    in_flight_batches: int = 0
    dropped_stale: int = 0
    exhausted: bool = False


class StoreDriver:
    """A driver that samples nothing (module docstring)."""

    def __init__(self, *, app, sessions, config, run_id: int) -> None:
        self.sessions, self.run_id = sessions, run_id
        self.ticks: list[int] = []

    def tick(self, *, trained_version: int) -> FakeReport:
        self.ticks.append(trained_version)
        with self.sessions.begin() as s:
            left = count_claimable(s, run_id=self.run_id) + s.scalar(
                select(func.count()).select_from(Trajectory).where(
                    Trajectory.run_id == self.run_id, Trajectory.state.in_(("generated", "auditing"))))
        return FakeReport(exhausted=left == 0)


def insert_bundles(
    sessions,
    run_id: int,
    count: int,
    *,
    tokens: int = 40,
    prompt_tokens: int = 6,
    chunks: tuple[tuple[int, int, str], ...] = ((2, 9, "audited"), (15, 22, "audited")),
    n: int = 4,
    policy_version: int = 0,
    vocab: int = 1000,
    seed: int = 0,
) -> list[int]:
    """`count` ready bundles: random prompt/completion ids, chunks (start, end, final state),
    audited ones with n teacher samples (phi 0.25 * (i % 4)) and k_sem = their sum."""
    gen = torch.Generator().manual_seed(seed)
    split = f"learner-{next(_SPLITS)}-{seed}"
    with sessions.begin() as s:
        problems = make_problems(s, count, split=split)
        records = []
        for k, pid in enumerate(problems):
            text = " ".join(f"w{j}" for j in range(tokens))
            records.append(TrajectoryIn(
                run_id=run_id, problem_id=pid, policy_version=policy_version, slot=SlotKey(pid, 0, k),
                prompt_token_ids=torch.randint(10, vocab, (prompt_tokens,), generator=gen).tolist(),
                completion_token_ids=torch.randint(10, vocab, (tokens,), generator=gen).tolist(),
                logprobs=[-1.0] * tokens, entropies=[1.0] * tokens, prompt_text="<prompt>",
                completion_text=text, finish_reason="stop", truncated=False, entropy_source="exact",
                chunks=[ChunkIn(a, b, 0, f"w{a}", 2.0, n) for a, b, _ in chunks],
            ))
        ids = [r.id for r in record_trajectories(s, trajectories=records)]
    with sessions.begin() as s:
        from db.models import Chunk

        for tid in ids:
            rows = s.scalars(select(Chunk).where(Chunk.trajectory_id == tid).order_by(Chunk.idx)).all()
            for row, (_, _, state) in zip(rows, chunks, strict=True):
                if state == "audited":
                    samples = [TeacherSampleIn(i, f"Answer: {i}", f"Answer: {i}", 0.25 * (i % 4)) for i in range(n)]
                    add_teacher_samples(s, chunk_id=row.id, samples=samples)
                    complete_chunk(s, chunk_id=row.id, k_sem=sum(x.phi for x in samples))
                else:
                    fail_chunk(s, chunk_id=row.id, state=state, error="test")
            assert promote_if_complete(s, trajectory_id=tid) == "ready"
    return ids


def insert_groups(
    sessions,
    run_id: int,
    rewards: list[list[float | None]],
    *,
    tokens: int = 40,
    prompt_tokens: int = 6,
    vocab: int = 1000,
    seed: int = 0,
) -> list[list[int]]:
    """One group per entry of `rewards` (one problem, its samples 0..G-1, one prompt), ready
    with their rewards; a None reward is a sample whose grading failed, dropped with reason
    `reward_failed` as the rollout worker drops it. Returns the trajectory ids per group."""
    gen = torch.Generator().manual_seed(seed)
    split = f"groups-{next(_SPLITS)}-{seed}"
    with sessions.begin() as s:
        problems = make_problems(s, len(rewards), split=split)
        records = []
        for pid, group in zip(problems, rewards, strict=True):
            prompt = torch.randint(10, vocab, (prompt_tokens,), generator=gen).tolist()
            for j, reward in enumerate(group):
                records.append(TrajectoryIn(
                    run_id=run_id, problem_id=pid, policy_version=0, slot=SlotKey(pid, 0, j),
                    prompt_token_ids=prompt, completion_token_ids=torch.randint(10, vocab, (tokens,), generator=gen).tolist(),
                    logprobs=[-7.0] * tokens, entropies=[1.0] * tokens, prompt_text="<prompt>",
                    completion_text="Answer: 1", finish_reason="stop", truncated=False, entropy_source="exact",
                    chunks=[], reward=reward,
                ))
        ids = [r.id for r in record_trajectories(s, trajectories=records)]
        flat = [r for group in rewards for r in group]
        for tid, reward in zip(ids, flat, strict=True):
            if reward is None:
                drop_trajectories(s, trajectory_ids=[tid], reason="reward_failed", detail="grader raised ValueError: test")
            else:
                assert promote_if_complete(s, trajectory_id=tid) == "ready"
    out, k = [], 0
    for group in rewards:
        out.append(ids[k : k + len(group)])
        k += len(group)
    return out
