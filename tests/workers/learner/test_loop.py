"""The learner loop in-process on a SQLite store with the tiny student and a fake driver:
bundles -> steps -> records -> checkpoints -> policy versions; stop conditions; the
bundle -> example conversion (skipped chunks are un-audited)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from db.models import PolicyVersion, Trajectory
from db.repo_budget import reserve, settle
from db.repo_bundles import claim_ready_bundles, learner_steps, load_bundles
from omniopd.money import usd_to_micros
from omniopd.train import build_trainer, checkpoint_root, latest_checkpoint
from tests.workers.conftest import Store, write_config
from tests.workers.learner_fakes import StoreDriver, insert_bundles
from workers.learner.loop import Learner, example_from_bundle
from workers.learner.output import TensorBoardSink

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def learner_store(tmp_path, tiny_model_dir, **learner) -> Store:
    path = write_config(
        tmp_path / "run.yaml",
        student={"path": tiny_model_dir, "device": "cpu"},
        learner={"batch_size": 2, "checkpoint_every": 2, "max_steps": 50, "lr": 1e-3, "tensorboard": False,
                 "poll_s": 0.05, **learner},
        loss={"normalisation": "token"},
    )
    return Store(path)


def make_learner(store: Store, *, stop: threading.Event | None = None, sinks=()) -> Learner:
    config = store.config
    root = checkpoint_root(config.run.output_dir)
    resumed = latest_checkpoint(root)
    return Learner(
        config=config, sessions=store.sessions, run_id=store.run_id, trainer=build_trainer(config, resume=resumed),
        driver=StoreDriver(app=None, sessions=store.sessions, config=config, run_id=store.run_id),
        checkpoint_dir=root, resumed=resumed, stop=stop, sinks=sinks,
    )


def consumption(store: Store) -> dict[int, int | None]:
    with store.sessions.begin() as s:
        return dict(s.execute(select(Trajectory.id, Trajectory.consumed_step).where(Trajectory.run_id == store.run_id)).all())


def test_bundles_become_examples_with_only_their_audited_chunks(tmp_path, tiny_model_dir):
    store = learner_store(tmp_path, tiny_model_dir)
    (tid,) = insert_bundles(store.sessions, store.run_id, 1,
                            chunks=((2, 9, "audited"), (12, 15, "skipped_budget"), (20, 25, "failed")))
    with store.sessions.begin() as s:
        (bundle,) = load_bundles(s, trajectory_ids=[tid], with_samples=True)
    example = example_from_bundle(bundle)
    assert example.key == tid and list(example.completion_ids) == bundle.completion_token_ids.tolist()
    assert [(c.start, c.end, c.k_sem, c.n) for c in example.chunks] == [(2, 9, 1.5, 4)]
    assert example.chunks[0].teacher_texts == ("Answer: 0", "Answer: 1", "Answer: 2", "Answer: 3")
    with store.sessions.begin() as s:
        (plain,) = load_bundles(s, trajectory_ids=[tid])
    assert example_from_bundle(plain).chunks[0].teacher_texts == ()


def test_learner_trains_every_bundle_once_checkpoints_and_publishes_versions(tmp_path, tiny_model_dir):
    store = learner_store(tmp_path, tiny_model_dir)
    ids = insert_bundles(store.sessions, store.run_id, 5)  # 2 + 2 + a last partial batch of 1
    tb = TensorBoardSink(tmp_path / "tb")
    summary = make_learner(store, sinks=[tb]).run()
    tb.close()
    assert summary.reason == "exhausted" and summary.steps == 3 and summary.bundles == 5
    assert summary.bundles_ready_left == 0 and summary.last_step == 3
    consumed = consumption(store)
    assert sorted(consumed) == sorted(ids) and sorted(consumed.values()) == [1, 1, 2, 2, 3]
    with store.sessions.begin() as s:
        steps = learner_steps(s, run_id=store.run_id)
        versions = s.execute(select(PolicyVersion.version, PolicyVersion.step).where(
            PolicyVersion.run_id == store.run_id).order_by(PolicyVersion.version)).all()
    assert [(r.step, r.n_bundles, r.policy_version) for r in steps] == [(1, 2, 0), (2, 2, 0), (3, 1, 1)]
    assert all(r.loss is not None and r.metrics["kl"] is not None and "wait_s" in r.metrics for r in steps)
    assert [tuple(v) for v in versions] == [(0, 0), (1, 2), (2, 3)]  # every K=2 steps, and at the end
    assert latest_checkpoint(checkpoint_root(store.config.run.output_dir)).step == 3
    assert "every problem is sampled" in summary.text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("learner/loss")] == [1, 2, 3]
    assert "learner/kl" in events.Tags()["scalars"] and "learner/proxy_mean" in events.Tags()["scalars"]


def test_learner_waits_for_a_full_batch_and_respects_the_policy_lag(tmp_path, tiny_model_dir):
    store = learner_store(tmp_path, tiny_model_dir, max_policy_lag=0, max_steps=1)
    insert_bundles(store.sessions, store.run_id, 1, seed=1)
    learner = make_learner(store)
    learner._start()
    assert learner._gather() == ([], False)  # one bundle held, waiting for the second
    assert len(learner.pending) == 1
    insert_bundles(store.sessions, store.run_id, 1, seed=2)
    batch, _ = learner._gather()
    assert len(batch) == 2
    learner.version = 3  # pretend v3 is current: lag 0 admits only bundles sampled by v3
    with store.sessions.begin() as s:
        insert_bundles(store.sessions, store.run_id, 1, seed=3)
        assert learner._min_version() == 3
        assert claim_ready_bundles(s, run_id=store.run_id, limit=5, min_policy_version=3, learner_id="x", lease_s=60) == []


def test_learner_stops_when_the_teacher_budget_is_spent(tmp_path, tiny_model_dir):
    path = write_config(
        tmp_path / "run.yaml",
        student={"path": tiny_model_dir, "device": "cpu"},
        learner={"batch_size": 2, "checkpoint_every": 10, "max_steps": 50, "tensorboard": False, "poll_s": 0.05},
        audit={"budget_usd": 0.5},
    )
    store = Store(path)
    insert_bundles(store.sessions, store.run_id, 6)
    learner = make_learner(store)
    with store.sessions.begin() as s:
        r = reserve(s, run_id=store.run_id, provider="emu", amount=usd_to_micros(0.5))
        settle(s, reservation_id=r.id, actual=usd_to_micros(0.5))
    summary = learner.run()
    assert summary.reason == "budget" and summary.steps == 0
    assert summary.spend_usd == pytest.approx(0.5) and summary.cap_usd == pytest.approx(0.5)
    assert summary.bundles_ready_left == 6  # paid-for bundles stay in the store for a resumed run
    assert "teacher budget spent" in summary.text() and "$0.5000 of $0.50 cap" in summary.text()


def test_a_stop_request_finishes_the_step_checkpoints_and_releases_claims(tmp_path, tiny_model_dir):
    store = learner_store(tmp_path, tiny_model_dir, checkpoint_every=10)
    insert_bundles(store.sessions, store.run_id, 6)
    stop = threading.Event()
    learner = make_learner(store, stop=stop)
    original = learner.trainer.step

    def step_then_signal(examples):  # the signal arrives while the first step runs
        stop.set()
        return original(examples)

    learner.trainer.step = step_then_signal
    summary = learner.run()
    assert summary.reason == "signal" and summary.steps == 1 and summary.checkpoint is not None
    assert summary.policy_version == 1 and latest_checkpoint(checkpoint_root(store.config.run.output_dir)).step == 1
    with store.sessions.begin() as s:
        held = s.scalars(select(Trajectory.id).where(Trajectory.claimed_by.is_not(None))).all()
    assert held == [] and sorted(v for v in consumption(store).values() if v) == [1, 1]


def test_a_run_stopped_while_waiting_for_bundles_counts_that_wait(tmp_path, tiny_model_dir):
    store = learner_store(tmp_path, tiny_model_dir)
    insert_bundles(store.sessions, store.run_id, 2)  # one step, then nothing more comes
    stop = threading.Event()
    learner = make_learner(store, stop=stop)
    learner.driver.tick = lambda **_: type("Report", (), {"exhausted": False})()  # more problems to come, never
    timer = threading.Timer(2.0, stop.set)
    timer.start()
    try:
        summary = learner.run()
    finally:
        timer.cancel()
    assert summary.reason == "signal" and summary.steps == 1
    assert summary.wait_s >= 1.0 and "0.0% of it waiting" not in summary.text()
