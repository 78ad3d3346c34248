"""Which methods need audits, and how a prefork rollout worker's processes get their GPUs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery import Celery

from omniopd.config import parse_config
from omniopd.objectives import OBJECTIVES, Needs
from tests.objectives.fakes import declaring
from tests.workers.conftest import Store, write_config
from workers.app import PENDING_KEY, audit_queue, audit_teacher
from workers.rollout import engine, task


def config(**loss):
    return parse_config({"teachers": {"t": {"kind": "anthropic", "model": "m"}}, "audit": {"teacher": "t"}, "loss": loss})


@pytest.mark.parametrize(
    ("loss", "teacher"),
    [
        ({"method": "omniopd"}, "t"),
        ({"method": "sft"}, "t"),  # sft on teacher continuations of the student's chunks
        ({"method": "sft", "sft_source": "trajectories"}, None),
        ({"method": "opd_whitebox", "whitebox_teacher": "/m"}, None),
    ],
)
def test_audits_go_to_the_auditing_teacher_only_for_methods_that_use_them(loss, teacher):
    assert audit_teacher(config(**loss)) == teacher


@pytest.mark.parametrize("audits", [False, True])
def test_a_new_objective_is_audited_or_promoted_straight_to_ready_as_it_declares(tmp_path, monkeypatch, audits):
    # Registered under a name no code knows: the rollout path reads only its declaration.
    monkeypatch.setitem(OBJECTIVES, "fresh", declaring(audits=audits))
    store = Store(write_config(tmp_path / "run.yaml", loss={"method": "fresh"}))  # audit.teacher: emu
    assert store.config.loss.needs == Needs(audits=audits)
    teacher = audit_teacher(store.config)
    assert teacher == ("emu" if audits else None)
    ids = store.trajectories(2, chunks=1 if audits else 0)  # records.py selects chunks only for audits
    app = Celery(set_as_current=False)
    app.omniopd_config = store.config  # as make_celery sets it: the outbox rows name the run
    with store.sessions.begin() as s:
        task.hand_on(s, app, trajectory_ids=ids, teacher=teacher)
        queued = s.info.pop(PENDING_KEY, [])  # inspected here, never sent (no broker in this test)
    sent = [(sig.args, sig.options["queue"]) for _, sig in queued]
    if audits:
        assert sent == [((i,), audit_queue("emu")) for i in ids] and "ready" not in store.states(ids)
    else:
        assert sent == [] and store.states(ids) == ["ready", "ready"]


def test_prefork_pool_process_i_sees_only_the_ith_gpu(monkeypatch):
    monkeypatch.setenv(engine.GPUS_ENV, "3,5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    for index, gpu in [(0, "3"), (1, "5")]:
        monkeypatch.setattr(engine, "current_process", lambda index=index: SimpleNamespace(index=index))
        engine.pin_gpu()
        assert engine.os.environ["CUDA_VISIBLE_DEVICES"] == gpu
    monkeypatch.delenv(engine.GPUS_ENV)
    engine.pin_gpu()  # solo worker or CPU: left alone
    assert engine.os.environ["CUDA_VISIBLE_DEVICES"] == "5"
