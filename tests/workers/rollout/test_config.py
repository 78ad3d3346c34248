"""Which methods need audits, and how a prefork rollout worker's processes get their GPUs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from omniopd.config import parse_config
from workers.rollout import task as rollout


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
    assert rollout.audit_teacher(config(**loss)) == teacher


def test_prefork_pool_process_i_sees_only_the_ith_gpu(monkeypatch):
    monkeypatch.setenv(rollout.GPUS_ENV, "3,5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    for index, gpu in [(0, "3"), (1, "5")]:
        monkeypatch.setattr(rollout, "current_process", lambda index=index: SimpleNamespace(index=index))
        rollout._pin_gpu()
        assert rollout.os.environ["CUDA_VISIBLE_DEVICES"] == gpu
    monkeypatch.delenv(rollout.GPUS_ENV)
    rollout._pin_gpu()  # solo worker or CPU: left alone
    assert rollout.os.environ["CUDA_VISIBLE_DEVICES"] == "5"
