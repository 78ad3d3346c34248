"""transformers backend end to end on the tiny student: samples, records, stops, seeds, topk."""

from __future__ import annotations

import pytest
import torch

from omniopd.algo.entropy import token_logprobs_and_entropy
from omniopd.config import parse_config
from omniopd.rollout import RolloutSettings, Sampling, build_engine, render_prompts, rollout_batch
from omniopd.rollout.hf import HFEngine

QUESTIONS = [("p-add", "What is 2+3?"), ("p-mul", "Compute 12*7, then add 5."), ("p-word", "A train leaves at 3pm.")]


@pytest.fixture(scope="module")
def engine(rollout_model_dir):
    config = parse_config({"student": {"path": rollout_model_dir, "device": "cpu"}, "rollout": {"backend": "hf"}})
    engine = build_engine(config)
    assert isinstance(engine, HFEngine)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def prompts(engine):
    rendered, refused = render_prompts(engine.tokenizer, QUESTIONS, "table7", 256)
    assert not refused
    return rendered


def full_forward(model, prompt, completion):
    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logits = model(ids).logits[0]  # [L, V]
    return token_logprobs_and_entropy(logits[len(prompt) - 1 : -1], torch.tensor(completion))


def check_record_invariants(records, tokenizer, source):
    for r in records:
        assert len(r.token_ids) == len(r.logprobs) == len(r.entropies) >= 1
        assert r.finish_reason in ("stop", "length") and r.truncated == (r.finish_reason == "length")
        assert r.entropy_source == source
        assert r.text == tokenizer.decode(r.token_ids, skip_special_tokens=True)
        assert min(r.entropies) >= 0 and max(r.logprobs) <= 0


def test_rollout_records_are_consistent_and_entropies_equal_a_separate_full_forward(engine, prompts):
    settings = RolloutSettings(samples_per_prompt=2, max_new_tokens=24, entropy_slice_tokens=5)
    batch = rollout_batch(engine, prompts, settings)
    records = batch.trajectories
    assert [(r.problem_id, r.sample_index) for r in records] == [(p, j) for p, _ in QUESTIONS for j in range(2)]
    check_record_invariants(records, engine.tokenizer, "exact")
    for r, prompt in zip(records, [p for p in prompts for _ in range(2)], strict=True):
        assert r.prompt_token_ids == prompt.token_ids and r.policy_version == 0
        lp, ent = full_forward(engine.model, r.prompt_token_ids, r.token_ids)
        assert torch.allclose(torch.tensor(r.entropies), ent, atol=1e-5, rtol=0)
        assert torch.allclose(torch.tensor(r.logprobs), lp, atol=1e-5, rtol=0)
    # a random tiny model almost never ends a turn within 24 tokens: truncation is marked, not hidden
    assert any(r.truncated and len(r.token_ids) == 24 for r in records)
    assert batch.completion_tokens == sum(len(r.token_ids) for r in records)


def test_same_seed_same_sample_whatever_the_batch_mates(engine, prompts):
    sampling = Sampling(max_new_tokens=16)
    ids = [p.token_ids for p in prompts]
    together = engine.generate(ids, 2, sampling, seeds=[11, 22, 33])
    alone = engine.generate(ids[1:2], 2, sampling, seeds=[22])
    assert [g.token_ids for g in together[2:4]] == [g.token_ids for g in alone]
    assert [g.seed for g in together[2:4]] == [g.seed for g in alone]
    again = engine.generate(ids, 2, sampling, seeds=[11, 22, 33])
    assert [g.token_ids for g in again] == [g.token_ids for g in together]
    # the two samples of one prompt, and different seeds, differ
    assert together[0].token_ids != together[1].token_ids
    other = engine.generate(ids[1:2], 2, sampling, seeds=[23])
    assert [g.token_ids for g in other] != [g.token_ids for g in alone]
    # records default to seeds derived from (run seed, problem id, policy version)
    settings = RolloutSettings(max_new_tokens=8, seed=7)
    first = rollout_batch(engine, prompts, settings).trajectories
    second = rollout_batch(engine, prompts[::-1], settings).trajectories
    assert {r.problem_id: r.token_ids for r in first} == {r.problem_id: r.token_ids for r in second}


def test_stop_string_ends_the_sample_at_the_token_that_completes_it(engine, prompts):
    # Most byte-level tokens of the tiny vocabulary start with a space, so " " stops at once.
    gens = engine.generate([p.token_ids for p in prompts], 2, Sampling(max_new_tokens=40, stop=(" ",), seed=3))
    for g in gens:
        assert g.finish_reason == "stop" and not g.truncated
        assert " " in g.text
        assert " " not in engine.tokenizer.decode(g.token_ids[:-1], skip_special_tokens=True)


def test_end_of_turn_token_stops_with_finish_reason_stop(engine, prompts):
    greedy = Sampling(max_new_tokens=6, temperature=0.0)
    first = engine.generate([prompts[0].token_ids], 1, greedy)[0]
    assert first.finish_reason == "length" and len(first.token_ids) == 6
    original = engine.stop_token_ids
    # Make the greedy second token an end-of-turn token: the sample must stop right there.
    engine.stop_token_ids = [*original, first.token_ids[1]]
    try:
        stopped = engine.generate([prompts[0].token_ids], 1, greedy)[0]
    finally:
        engine.stop_token_ids = original
    assert stopped.token_ids == first.token_ids[:2] and stopped.finish_reason == "stop"


def test_topk_source_uses_engine_logprobs_and_is_recorded(engine, prompts):
    exact = rollout_batch(engine, prompts, RolloutSettings(max_new_tokens=12, seed=5)).trajectories
    topk = rollout_batch(engine, prompts, RolloutSettings(max_new_tokens=12, seed=5, entropy_source="topk", topk=8)).trajectories
    check_record_invariants(topk, engine.tokenizer, "topk")
    for e, t in zip(exact, topk, strict=True):
        assert e.token_ids == t.token_ids  # asking for logprobs does not change sampling
        # the engine's sampled-token logprob is the scoring pass's
        assert torch.allclose(torch.tensor(t.logprobs), torch.tensor(e.logprobs), atol=1e-5, rtol=0)
        # top-k plus one residual bucket is a lower bound of the exact entropy (Eq. 6)
        assert all(te <= ee + 1e-5 for te, ee in zip(t.entropies, e.entropies, strict=True))
        assert t.entropies != pytest.approx(e.entropies, abs=1e-3)


def test_sampling_settings_are_validated():
    with pytest.raises(ValueError, match="top_p"):
        Sampling(max_new_tokens=4, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        Sampling(max_new_tokens=0)
