"""`run_learner` as two real processes (gloo on CPU, FSDP2) on a SQLite store: rank 0 claims,
records, checkpoints and publishes; rank 1 trains its share of every step and never opens
the store, the broker or Celery (each is a tripwire on rank 1)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from sqlalchemy import select

from db.models import PolicyVersion, Trajectory
from db.repo_bundles import learner_steps
from omniopd.train import checkpoint_root, list_checkpoints
from tests.workers.conftest import Store, write_config
from tests.workers.learner_fakes import insert_bundles

WORLD = 2
# what only rank 0 may touch: run_learner imports these lazily, so replacing the module
# attributes catches every use
RANK_ZERO_ONLY = [
    ("db.store", "open_store"),
    ("workers.store", "ensure_run"),
    ("db.session", "make_engine"),
    ("db.session", "make_session_factory"),
    ("workers.broker", "broker_for"),
    ("workers.app", "make_celery"),
]


def _tripwires(out: Path, rank: int) -> None:
    import importlib

    def wire(name: str):
        def tripped(*args, **kwargs):
            (out / f"rank{rank}-opened").write_text(name)
            raise AssertionError(f"rank {rank} called {name}: only rank 0 talks to the store and the broker")
        return tripped

    for module, attr in RANK_ZERO_ONLY:
        setattr(importlib.import_module(module), attr, wire(f"{module}.{attr}"))


def _rank(rank: int, port: int, config_path: str, out: str) -> None:
    from omniopd.config import load_config
    from tests.workers.learner_fakes import StoreDriver
    from workers.learner.run import run_learner

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if rank != 0:
        _tripwires(Path(out), rank)
    summary = run_learner(load_config(config_path), config_path=config_path, driver_factory=StoreDriver)
    result = None if summary is None else {"reason": summary.reason, "steps": summary.steps,
                                            "bundles": summary.bundles, "policy_version": summary.policy_version}
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_rank_learner_trains_every_bundle_once_and_only_rank_zero_touches_the_store(tmp_path, tiny_model_dir):
    config = write_config(
        tmp_path / "run.yaml",
        student={"path": tiny_model_dir, "device": "cpu"},
        learner={"batch_size": 2, "checkpoint_every": 2, "max_steps": 50, "lr": 1e-3, "tensorboard": False,
                 "poll_s": 0.05},
        loss={"normalisation": "token"},
    )
    store = Store(config)
    ids = insert_bundles(store.sessions, store.run_id, 5)  # steps of 2, 2 and a last one of 1
    mp.spawn(_rank, args=(_free_port(), str(config), str(tmp_path)), nprocs=WORLD, join=True)

    assert not list(tmp_path.glob("rank*-opened"))
    assert json.loads((tmp_path / "rank1.json").read_text()) is None  # rank 0 reports
    summary = json.loads((tmp_path / "rank0.json").read_text())
    assert summary == {"reason": "exhausted", "steps": 3, "bundles": 5, "policy_version": 2}
    with store.sessions.begin() as s:
        steps = learner_steps(s, run_id=store.run_id)
        consumed = dict(s.execute(select(Trajectory.id, Trajectory.consumed_step)
                                  .where(Trajectory.run_id == store.run_id)).all())
        versions = s.scalars(select(PolicyVersion.version).where(PolicyVersion.run_id == store.run_id)
                             .order_by(PolicyVersion.version)).all()
    assert [r.step for r in steps] == [1, 2, 3] and all(r.loss > 0 for r in steps)
    assert sorted(consumed) == sorted(ids) and sorted(consumed.values()) == [1, 1, 2, 2, 3]
    assert list(versions) == [0, 1, 2]
    assert [c.step for c in list_checkpoints(checkpoint_root(store.config.run.output_dir))] == [2, 3]
