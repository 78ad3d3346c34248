"""The pipeline model of the learner's waiting (omniopd/reports/pipeline.py): hand-checked
cases, monotonicity, and the sizing's minimality."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import statistics

import pytest
from typer.testing import CliRunner

from omniopd.cli import app
from omniopd.reports.pipeline import (
    PRESETS,
    Limits,
    PipelineInputs,
    expected_max,
    learner_step_estimate,
    lognormal_latencies,
    predict,
    size,
)


def _setting(**changes) -> PipelineInputs:
    """B = 4, M = 2, one request per chunk of constant 0.5 s latency, 4 audit threads, one
    rollout worker at 8 trajectories/s, learner step 1 s, no rate limits, synchronous."""
    base = PipelineInputs(
        batch_size=4, m=2, n=1, candidates_per_request=1, prompt_tokens=10, trajectory_tokens=100,
        output_tokens=5, learner_step_s=1.0, rollout_per_worker=8.0, latencies_s=(0.5,), limits=Limits(),
        rollout_workers=1, audit_threads=4, pipeline_depth=1, max_policy_lag=0,
    )
    return dataclasses.replace(base, **changes)


def test_expected_max_of_order_statistics_by_hand():
    assert expected_max([3.0, 1.0, 2.0], 1) == pytest.approx(2.0)  # q = 1: the mean
    # two draws from {1, 2}: max is 1 only if both are 1 (1/4)
    assert expected_max([1.0, 2.0], 2) == pytest.approx(1 * 0.25 + 2 * 0.75)
    assert expected_max([0.7], 10) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="latencies is empty"):
        expected_max([], 1)


def test_sync_pipeline_waits_for_the_whole_batch_latency():
    # batch latency = rollout 4 / 8 = 0.5 s + one wave of 2 chunks x 0.5 s = 1.5 s; with no
    # batch ahead the step period is latency + step = 2.5 s, so the learner waits 1 - 1/2.5
    p = predict(_setting())
    assert p.batch_latency_s == pytest.approx(1.5)
    assert p.period_s == pytest.approx(2.5)
    assert p.waiting == pytest.approx(0.6)
    assert p.bottleneck == "latency"


def test_two_batches_ahead_halve_the_latency_term():
    p = predict(_setting(pipeline_depth=2, max_policy_lag=1))
    assert p.period_s == pytest.approx(max(1.0, (1.5 + 1.0) / 2))  # 1.25 s
    assert p.waiting == pytest.approx(0.2)


def test_rate_limit_binds_when_it_carries_less_than_the_learner_needs():
    # 60 requests/min at M = 2, one request per chunk: 0.5 trajectories/s; the learner needs 4
    p = predict(_setting(limits=Limits(requests_per_min=60, fraction=1.0), pipeline_depth=8, max_policy_lag=7))
    assert p.rate_limit_rate == pytest.approx(0.5)
    assert p.period_s == pytest.approx(4 / 0.5)
    assert p.bottleneck == "rate limit"
    assert p.waiting == pytest.approx(1 - 1 / 8)


def test_no_waiting_when_every_stage_is_faster_than_the_learner():
    p = predict(_setting(rollout_workers=4, audit_threads=64, pipeline_depth=4, max_policy_lag=3))
    assert p.waiting == pytest.approx(0.0)
    assert p.bottleneck == "learner"


def test_anthropic_requests_per_chunk_and_cache_reads_outside_input_limit():
    p = _setting(n=10, candidates_per_request=1, limits=Limits(input_tokens_per_min=60 * 1000, fraction=1.0))
    # per trajectory: M x q x (P + L/2) = 2 x 10 x 60 input tokens; with cache reads free, 2 x 60
    assert predict(p).rate_limit_rate == pytest.approx(1000 / 1200)
    assert predict(dataclasses.replace(p, cached_requests_free=True)).rate_limit_rate == pytest.approx(1000 / 120)


@pytest.mark.parametrize("seed", range(5))
def test_waiting_never_rises_with_more_workers(seed):
    rng = random.Random(seed)
    p = _setting(latencies_s=tuple(rng.uniform(0.2, 2.0) for _ in range(20)), n=rng.randint(1, 10),
                 pipeline_depth=2, max_policy_lag=1, limits=Limits(requests_per_min=rng.uniform(100, 5000)))
    for field in ("rollout_workers", "audit_threads"):
        waits = [predict(dataclasses.replace(p, **{field: k})).waiting for k in range(1, 40)]
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(waits)), field


def test_sizing_is_the_fewest_workers_that_meet_the_target():
    p = _setting(pipeline_depth=4, max_policy_lag=3)
    s = size(p, target=0.05)
    assert s.reason == "" and s.limit_scale == 1.0
    assert s.prediction.waiting <= 0.05
    fewer = dataclasses.replace(p, rollout_workers=s.rollout_workers, audit_threads=s.audit_threads - 1)
    assert s.audit_threads == 1 or predict(fewer).waiting > 0.05


def test_sizing_names_what_else_must_change_when_no_worker_count_suffices():
    p = _setting(limits=Limits(requests_per_min=60, fraction=1.0))  # sync, and the limits bind
    s = size(p, target=0.05)
    assert "rate limits" in s.reason and "pipeline_depth" in s.reason
    # the limits must carry demand x (1 - target) = 4 x 0.95 of their 0.5 trajectories/s
    assert s.limit_scale == pytest.approx(4 * 0.95 / 0.5, rel=1e-3)
    assert s.ahead > 1
    assert s.prediction.waiting <= 0.05


def test_lognormal_latencies_have_the_given_median_and_p90():
    xs = sorted(lognormal_latencies(1.2, 2.0, n=1000))
    assert statistics.median(xs) == pytest.approx(1.2, rel=0.01)
    assert xs[900] == pytest.approx(2.0, rel=0.02)
    with pytest.raises(ValueError):
        lognormal_latencies(2.0, 1.0)


def test_learner_step_estimate_by_hand():
    # 8 FLOPs per parameter and token: 8 x 1e9 x 1000 / (1e12 x 0.5) = 16 s
    assert learner_step_estimate(1e9, 1000, 1e12, 0.5) == pytest.approx(16.0)


def test_pipeline_command_prints_a_sizing_for_every_preset():
    for preset in PRESETS:
        result = CliRunner().invoke(app, ["pipeline", "--preset", preset, "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["sizing"]["prediction"]["waiting"] <= 0.05
        assert data["sizing"]["audit_workers"] >= 1


def test_pipeline_command_takes_measured_figures_and_rejects_bad_ones():
    runner = CliRunner()
    ok = runner.invoke(app, ["pipeline", "-p", "demo", "--learner-step-s", "2.0", "--json"])
    assert json.loads(ok.output)["inputs"]["learner_step_s"] == 2.0
    bad = runner.invoke(app, ["pipeline", "-p", "nope"])
    assert bad.exit_code == 2 and "unknown preset" in bad.output
    half = runner.invoke(app, ["pipeline", "--latency-median-s", "1"])
    assert half.exit_code == 2 and "together" in half.output
