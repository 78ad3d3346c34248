"""The dashboard's SQL aggregates agree with the same numbers computed in Python from the
rows, on both backends (scripts/bench/dashboard.py checks them on large stores too)."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

from db.repo_dashboard import learner_series, ledger_series, run_span
from db.repo_ledger import TokenUsage, close_call, open_call
from db.repo_runs import open_run
from db.session import make_session_factory


def test_time_buckets_and_running_totals_are_the_same_on_both_backends(engine):
    sessions = make_session_factory(engine)
    start = datetime(2026, 3, 1, 12, 0, 0, 250_000)
    with sessions.begin() as s:
        run = open_run(s, name="r", config={}, base_model_path="/b", provider_caps={"a": None, "b": None}, run_cap=None,
                       now=start)
    costs = []
    for k in range(40):
        at = start + timedelta(seconds=7.3 * k)
        provider = "ab"[k % 2]
        with sessions.begin() as s:
            call = open_call(s, run_id=run.id, provider=provider, model="m", reserve_micros=900, idempotency_key=str(k), now=at)
            cost = close_call(s, call_id=call.id, status="ok", usage=TokenUsage(input=k, output=1), cost_micros=10 * k,
                              http_status=429 if k % 7 == 0 else 200, latency_ms=1.0, now=at)
        costs.append((provider, calendar.timegm(at.timetuple()), cost, k % 7 == 0))
    with sessions.begin() as s:
        span = run_span(s, run_id=run.id)
        assert span.t0 == calendar.timegm(start.timetuple())  # whole seconds, rounded down, as UTC
        width = span.width_s(10)
        got = ledger_series(s, run_id=run.id, t0=span.t0, width_s=width, since=start)
    expected: dict[tuple[str, int], list[int]] = {}
    for provider, t, cost, limited in costs:
        cell = expected.setdefault((provider, (t - span.t0) // width), [0, 0, 0])
        cell[0] += 1
        cell[1] += limited
        cell[2] += cost
    running: dict[str, int] = {}
    want = []
    for (provider, bucket), (n, limited, cost) in sorted(expected.items()):
        running[provider] = running.get(provider, 0) + cost
        want.append((provider, bucket, n, limited, cost, running[provider]))
    assert [(b.provider, b.bucket, b.calls, b.rate_limited, b.cost_micros, b.cumulative_micros) for b in got] == want
    assert len({b.bucket for b in got}) <= 10


def test_learner_curve_averages_consecutive_steps_and_keeps_the_proxy_extremes(sessions, run_id):
    from db.models import LearnerStep, utcnow

    with sessions.begin() as s:
        for step in range(1, 11):
            s.add(LearnerStep(run_id=run_id, step=step, learner_id="l", policy_version=0, loss=float(step), n_bundles=1,
                              n_tokens=1, wall_s=1.0, created_at=utcnow(),
                              metrics={"kl": 0.1 * step, "proxy_min": 1.0 / step, "proxy_max": float(step),
                                       **({"chunk_loss": 2.0} if step % 2 else {})}))
    with sessions.begin() as s:
        points = learner_series(s, run_id=run_id, max_points=4)  # buckets of 3 steps: 1-3, 4-6, 7-9, 10
    assert [(p.step, p.steps) for p in points] == [(3, 3), (6, 3), (9, 3), (10, 1)]
    assert [p.loss for p in points] == [2.0, 5.0, 8.0, 10.0]
    assert [round(p.metrics["kl"], 9) for p in points] == [0.2, 0.5, 0.8, 1.0]
    assert [p.metrics["proxy_min"] for p in points] == [1 / 3, 1 / 6, 1 / 9, 1 / 10]
    assert [p.metrics["proxy_max"] for p in points] == [3.0, 6.0, 9.0, 10.0]
    assert [p.metrics["chunk_loss"] for p in points] == [2.0, 2.0, 2.0, None]  # absent keys are skipped, not zero
    assert all(p.metrics["grad_norm"] is None and p.max_lag is None for p in points)
