"""Weight sync on the transformers backend: reload, verify by probe, refuse tied checkpoints."""

from __future__ import annotations

import pytest

from omniopd.rollout import (
    RolloutSettings,
    WeightSyncError,
    load_version,
    render_prompts,
    rollout_batch,
    verify_probe,
)
from omniopd.rollout.hf import HFEngine
from omniopd.rollout.weights import check_untied, probe_token_ids, reference_logprobs
from tests.rollout.checkpoints import save_perturbed


@pytest.fixture(scope="module")
def checkpoints(rollout_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("policy-versions")
    return {
        "v1": save_perturbed(rollout_model_dir, root / "v1", seed=1),
        "tied": save_perturbed(rollout_model_dir, root / "tied", seed=2, tied=True),
    }


def test_reloaded_engine_samples_from_the_new_version_and_matches_it(rollout_model_dir, checkpoints):
    engine = HFEngine(rollout_model_dir, device="cpu")
    prompts, _ = render_prompts(engine.tokenizer, [("p", "What is 2+3?")], "table7", 256)
    settings = RolloutSettings(max_new_tokens=10, seed=1)
    before = rollout_batch(engine, prompts, settings).trajectories[0]
    ids = probe_token_ids(engine.tokenizer)
    probe_before = engine.probe_logprobs(ids)
    assert verify_probe(engine, rollout_model_dir, 1e-5) < 1e-5
    with pytest.raises(WeightSyncError, match="probe log-probabilities differ"):
        verify_probe(engine, checkpoints["v1"], 1e-3)  # not loaded yet: the check must notice

    report = load_version(engine, checkpoints["v1"], 1, tolerance=1e-3)
    assert (report.version, report.method, engine.policy_version) == (1, "state_dict", 1)
    assert report.checkpoint == str(checkpoints["v1"]) and report.seconds > 0
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-5
    probe_after = engine.probe_logprobs(ids)
    assert max(abs(a - b) for a, b in zip(probe_after, probe_before, strict=True)) > 1e-2
    assert probe_after == pytest.approx(reference_logprobs(checkpoints["v1"], ids), abs=1e-5)
    # the next batch is sampled and scored by version 1
    after = rollout_batch(engine, prompts, RolloutSettings(max_new_tokens=10, seed=1)).trajectories[0]
    assert after.policy_version == 1
    assert after.token_ids != before.token_ids or after.logprobs != pytest.approx(before.logprobs, abs=1e-3)


def test_tied_checkpoint_is_refused_by_its_config(rollout_model_dir, checkpoints):
    with pytest.raises(WeightSyncError, match=r"tie_word_embeddings: true.*Save the policy untied"):
        check_untied(checkpoints["tied"])
    engine = HFEngine(rollout_model_dir, device="cpu")
    with pytest.raises(WeightSyncError, match="tie_word_embeddings"):
        load_version(engine, checkpoints["tied"], 2, tolerance=1e-3)
    assert engine.policy_version == 0
    # transformers itself is not fooled: without the config check it loads the tied output
    # layer as transformers does (a copy of the new embeddings) and the probe agrees.
    report = load_version(engine, checkpoints["tied"], 2, tolerance=1e-3, refuse_tied=False)
    assert report.max_abs_diff < 1e-5 and engine.policy_version == 2


def test_engine_started_from_a_tied_model_cannot_take_untied_checkpoints(checkpoints, rollout_model_dir):
    engine = HFEngine(str(checkpoints["tied"]), device="cpu")
    with pytest.raises(WeightSyncError, match="start rollout workers from an untied copy"):
        load_version(engine, checkpoints["v1"], 1, tolerance=1e-3)


def test_checkpoint_without_weights_is_a_clear_error(rollout_model_dir, tmp_path):
    (tmp_path / "config.json").write_text('{"tie_word_embeddings": false}')
    engine = HFEngine(rollout_model_dir, device="cpu")
    with pytest.raises(WeightSyncError, match=r"no \*\.safetensors files"):
        load_version(engine, tmp_path, 1, tolerance=1e-3)
    with pytest.raises(WeightSyncError, match=r"no config\.json"):
        load_version(engine, tmp_path / "missing", 1, tolerance=1e-3)
