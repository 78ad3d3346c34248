"""Eval results resume without regrading; run status counts what the dashboard shows."""

from __future__ import annotations

import pytest

from db.models import utcnow
from db.repo_bundles import claim_ready_bundles, record_step_and_consume
from db.repo_eval import (
    EvalResultIn,
    eval_results,
    finish_eval_run,
    graded_samples,
    iter_eval_results,
    list_eval_runs,
    open_eval_run,
    policy_version_at_step,
    record_eval_results,
    result_outcomes,
)
from db.repo_ledger import TokenUsage, close_call, open_call
from db.repo_runs import get_policy_version, latest_policy_version, publish_policy_version
from db.repo_status import run_status
from db.repo_trajectories import drop_trajectories, record_trajectories
from tests.db.conftest import make_problems, ready_bundles, trajectory


def result(item, k, correct=True):
    return EvalResultIn(item, k, correct, float(correct), f"answer {item}/{k}", extracted="4", seed=k)


def test_an_interrupted_evaluation_resumes_without_regrading(sessions, run_id):
    with sessions.begin() as s:
        ev = open_eval_run(s, key="math500/ckpt-10/t1.0", benchmark="math500", model="/ckpt/10", samples=2,
                           config={"temperature": 1.0}, run_id=run_id, policy_version=1, step=10)
        assert record_eval_results(s, eval_run_id=ev.id, results=[result("a", 0), result("a", 1, False)]) == 2
    # the process died; a rerun reopens the same key and grades only what is missing
    with sessions.begin() as s:
        again = open_eval_run(s, key="math500/ckpt-10/t1.0", benchmark="math500", model="/ckpt/10", samples=2, config={})
        assert again.id == ev.id
        done = graded_samples(s, eval_run_id=ev.id)
        todo = [(i, k) for i in ("a", "b") for k in range(2) if (i, k) not in done]
        assert todo == [("b", 0), ("b", 1)]
        assert record_eval_results(s, eval_run_id=ev.id, results=[result("a", 0), *[result(i, k) for i, k in todo]]) == 2
        finish_eval_run(s, eval_run_id=ev.id, pass_at_1=0.75, metrics={"pass@2": 1.0})
    with sessions.begin() as s:
        (run,) = list_eval_runs(s, run_id=run_id)
        assert (run.status, run.pass_at_1, run.metrics) == ("finished", 0.75, {"pass@2": 1.0})
        assert [(r.item_id, r.sample_index, r.correct) for r in eval_results(s, eval_run_id=ev.id)] == [
            ("a", 0, True), ("a", 1, False), ("b", 0, True), ("b", 1, True)]
        with pytest.raises(ValueError, match="k=2"):
            open_eval_run(s, key="math500/ckpt-10/t1.0", benchmark="math500", model="x", samples=16, config={})


def test_eval_runs_are_found_by_training_run_step_and_key_prefix_and_read_light_or_streamed(sessions, run_id):
    with sessions.begin() as s:
        publish_policy_version(s, run_id=run_id, version=1, path="/ckpt/5", step=5)
        assert policy_version_at_step(s, run_id=run_id, step=5).path == "/ckpt/5"
        assert policy_version_at_step(s, run_id=run_id, step=0).version == 0
        assert policy_version_at_step(s, run_id=run_id, step=6) is None
        for step, tag in ((0, "base_1"), (5, "v1_x")):
            ev = open_eval_run(s, key=f"{tag}/math500", benchmark="math500", model=tag, samples=2, config={},
                               run_id=run_id, policy_version=step // 5, step=step)
            record_eval_results(s, eval_run_id=ev.id, results=[result("a", 0), result("a", 1, step == 5)])
        open_eval_run(s, key="base%1/math500", benchmark="math500", model="m", samples=2, config={})
    with sessions.begin() as s:
        assert [r.step for r in list_eval_runs(s, run_id=run_id, benchmark="math500")] == [0, 5]
        # the prefix is literal: '_' and '%' are not wildcards
        assert [r.key for r in list_eval_runs(s, key_prefix="base_1/")] == ["base_1/math500"]
        assert [r.key for r in list_eval_runs(s, key_prefix="base%")] == ["base%1/math500"]
        ev = list_eval_runs(s, key_prefix="v1_x/")[0]
        assert sorted(result_outcomes(s, eval_run_id=ev.id)) == [("a", 0, True), ("a", 1, True)]
        streamed = list(iter_eval_results(s, eval_run_id=ev.id, chunk=1))
        assert streamed == eval_results(s, eval_run_id=ev.id)
        assert [(r.seed, r.completion) for r in streamed] == [(0, "answer a/0"), (1, "answer a/1")]


def test_policy_versions_are_unique_per_run_and_version_zero_is_the_base(sessions, run_id):
    with sessions.begin() as s:
        assert latest_policy_version(s, run_id=run_id).path == "/models/base"
        publish_policy_version(s, run_id=run_id, version=1, path="/ckpt/5", step=5)
        publish_policy_version(s, run_id=run_id, version=1, path="/ckpt/5", step=5)  # idempotent
        with pytest.raises(ValueError, match="already published"):
            publish_policy_version(s, run_id=run_id, version=1, path="/ckpt/other", step=5)
        assert latest_policy_version(s, run_id=run_id).version == 1
        assert get_policy_version(s, run_id=run_id, version=7) is None


def test_run_status_counts_states_reasons_bundles_and_spend(sessions, run_id):
    ready = ready_bundles(sessions, run_id, 3)
    with sessions.begin() as s:
        pids = make_problems(s, 2, split="extra")
        ids = [r.id for r in record_trajectories(s, trajectories=[trajectory(run_id, p) for p in pids])]
        drop_trajectories(s, trajectory_ids=ids[:1], reason="empty_completion")
        claimed = claim_ready_bundles(s, run_id=run_id, limit=2, min_policy_version=0, learner_id="L", lease_s=600)
        record_step_and_consume(s, run_id=run_id, step=1, learner_id="L", trajectory_ids=[claimed[0].trajectory_id],
                                policy_version=0, metrics={})
        call = open_call(s, run_id=run_id, provider="claude", model="m", reserve_micros=500, idempotency_key="k")
        close_call(s, call_id=call.id, status="ok", usage=TokenUsage(10, 0, 0, 5, 0), cost_micros=120,
                   http_status=200, latency_ms=1.0)
        open_call(s, run_id=run_id, provider="gemini", model="g", reserve_micros=300, idempotency_key="k2")
    with sessions.begin() as s:
        st = run_status(s, run_id=run_id, run_name="test-run", run_status="running", now=utcnow())
    assert st.trajectories == {"generated": 1, "auditing": 0, "ready": 2, "consumed": 1, "dropped": 1}
    assert st.dropped == {"empty_completion": 1}
    assert (st.bundles_ready, st.bundles_claimed, st.bundles_consumed) == (1, 1, 1)
    assert st.chunks["pending"] == 2 + 2  # two trajectories with two chunks each (one dropped)
    assert {b.provider: (b.spent, b.reserved) for b in st.budgets} == {"claude": (120, 0), "gemini": (0, 300), "*": (120, 300)}
    assert {c.key: c.calls for c in st.calls} == {"claude": 1, "gemini": 1}
    assert (st.latest_step, st.latest_policy_version) == (1, 0)
    assert ready[0] == claimed[0].trajectory_id
