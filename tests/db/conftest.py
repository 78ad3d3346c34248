"""Store fixtures: a migrated database on each backend, a run, and builders of test rows.

`backend_url` is parametrised over SQLite (a file in tmp_path) and PostgreSQL (a fresh
database from tests/conftest.py), so a test that uses it checks that both behave alike.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from db.migrate import upgrade
from db.models import Base
from db.problem_files import ProblemRow
from db.repo_problems import import_problems
from db.repo_runs import open_run
from db.repo_trajectories import ChunkIn, SlotKey, TrajectoryIn, record_trajectories
from db.session import make_engine, make_session_factory

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]


@pytest.fixture(params=BACKENDS)
def empty_url(request, tmp_path):
    """URL of an empty database (no schema) on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied per test (migrating each time costs more than the test)."""
    path = tmp_path_factory.mktemp("template") / "store.db"
    eng = make_engine(f"sqlite:///{path}")
    upgrade(eng)
    eng.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_store(postgres_admin_url):
    """One migrated PostgreSQL database for the session; tests empty it (TRUNCATE) before use,
    which is ~50x faster than creating a database per test."""
    import sqlalchemy as sa

    name = f"omniopd_store_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    eng = make_engine(url)
    upgrade(eng)
    eng.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def backend_url(request, tmp_path):
    """URL of an empty database at the head revision, on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    import sqlalchemy as sa

    url = request.getfixturevalue("postgres_store")
    eng = sa.create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with eng.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    eng.dispose()
    return url


@pytest.fixture
def engine(backend_url):
    eng = make_engine(backend_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine):
    return make_session_factory(engine)


@pytest.fixture
def run_id(sessions) -> int:
    with sessions.begin() as s:
        return open_run(
            s, name="test-run", config={"test": True}, base_model_path="/models/base",
            provider_caps={"claude": None, "gemini": None}, run_cap=None,
        ).id


def make_problems(session, n: int, split: str = "train") -> list[int]:
    rows = [ProblemRow(k + 1, f"{split}-{k}", f"question {k}", str(k), None, split, None, {}, f"{split}-hash-{k}")
            for k in range(n)]
    import_problems(session, rows=rows)
    from db.repo_problems import problem_ids

    return problem_ids(session, split=split)[-n:]


def trajectory(run_id: int, problem_id: int, *, sample_index: int = 0, policy_version: int = 0, n_tokens: int = 12,
               chunks: int = 2, n: int = 3, attempt: int = 0, epoch: int = 0) -> TrajectoryIn:
    """A consistent fake trajectory: tokens 0..T-1, `chunks` chunks of 3 tokens each."""
    text = " ".join(f"w{k}" for k in range(n_tokens))
    spans = [(4 * c, 4 * c + 3) for c in range(chunks)]
    return TrajectoryIn(
        run_id=run_id, problem_id=problem_id, policy_version=policy_version,
        slot=SlotKey(problem_id, epoch, sample_index, attempt),
        prompt_token_ids=[101, 102, 103], completion_token_ids=list(range(n_tokens)),
        logprobs=[-0.5] * n_tokens, entropies=[float(k % 5) for k in range(n_tokens)],
        prompt_text="<prompt>", completion_text=text, finish_reason="stop", truncated=False, entropy_source="exact",
        chunks=[ChunkIn(start=a, end=b, char_start=3 * a, student_text=f"w{a} w{a + 1} w{a + 2}", anchor_entropy=1.5,
                        n_target=n) for a, b in spans],
        meta={"worker": "test"},
    )


def ready_bundles(sessions, run_id: int, count: int, *, policy_version: int = 0) -> list[int]:
    """`count` trajectories without chunks, promoted straight to ready."""
    from sqlalchemy import update

    from db.models import Trajectory, utcnow

    with sessions.begin() as s:
        pids = make_problems(s, count, split=f"bundles-v{policy_version}")
        recorded = record_trajectories(
            s, trajectories=[trajectory(run_id, p, chunks=0, policy_version=policy_version) for p in pids]
        )
        ids = [r.id for r in recorded]
        s.execute(update(Trajectory).where(Trajectory.id.in_(ids)).values(state="ready", ready_at=utcnow()))
    return ids
