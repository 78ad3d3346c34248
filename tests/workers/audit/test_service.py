"""The audit of a trajectory, in process, against the emulator over HTTP and a SQLite store:
samples, phi and k_sem; faults with nothing lost and nothing billed twice; budget caps;
retries that fetch only what is missing; errors that fail a chunk vs the run's config."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from contextlib import ExitStack
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from db.repo_audit import TeacherSampleIn, add_teacher_samples
from db.repo_budget import BudgetView, settle
from db.repo_ledger import ledger_totals, open_call
from omniopd.algo import similarity
from omniopd.algo.similarity import PhiRangeError, cut_continuation, phi_batch
from omniopd.money import usd_to_micros
from omniopd.teachers import client as client_module
from omniopd.teachers import prompting
from omniopd.teachers.emulator import EmulatorConfig, EmulatorThread, scripted
from omniopd.teachers.pricing import Price, attempt_cost_micros, reservation_micros
from omniopd.teachers.types import Attempt, AttemptEstimate, BudgetExhausted, Usage
from tests.workers.audit_helpers import (
    KEY_ENV,
    add_trajectories,
    assert_books_balance,
    audit_config,
    budget_rows,
    chunk_rows,
    ledger,
    samples_of,
    student_like,
    trajectory_rows,
)
from tests.workers.conftest import Store
from workers.audit.budget_guard import StoreBudgetGuard, refusal
from workers.audit.service import TeacherSetupError, audit_trajectory, make_audit_context


@pytest.fixture
def audit_env(tmp_path, monkeypatch):
    """`start(provider, generator=None, teacher=..., sections..., **emulator)` -> (store, ctx, emulator thread)."""
    monkeypatch.setenv(KEY_ENV, "sk-test-audit-0123456789abcdef")
    client_module._MODE_FALLBACK.clear()
    prompting.PREFIXES._items.clear()
    with ExitStack() as stack:

        def start(provider="anthropic", generator=None, teacher=None, sections=None, n=3, **emulator):
            emu = stack.enter_context(EmulatorThread(EmulatorConfig(provider=provider, **emulator), generator or student_like()))
            model = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4.1-mini", "gemini": "gemini-2.5-flash"}[provider]
            path = audit_config(tmp_path / "run.yaml", url=emu.url, kind=provider, model=model, n=n, teacher=teacher,
                                **(sections or {}))
            store = Store(path)
            stack.callback(store.engine.dispose)
            ctx = make_audit_context(store.config, store.sessions)
            stack.callback(ctx.close)
            return store, ctx, emu

        yield start
    client_module._MODE_FALLBACK.clear()


def test_audit_stores_n_scored_samples_per_chunk_with_k_sem_and_the_trajectory_becomes_ready(audit_env):
    store, ctx, emu = audit_env("anthropic", n=4)
    ids = add_trajectories(store, 2, n=4)
    outcomes = [audit_trajectory(ctx, t) for t in ids]
    assert [o.state for o in outcomes] == ["ready", "ready"] and all(o.audited == 2 for o in outcomes)
    for chunk in chunk_rows(store, ids):
        samples = samples_of(store, chunk.id)
        assert [s.i for s in samples] == [0, 1, 2, 3] and chunk.state == "audited"
        cut = [cut_continuation(s.text, chunk.student_text, "words") for s in samples]
        assert [s.cut_text for s in samples] == cut
        assert [s.phi for s in samples] == pytest.approx(phi_batch("edit", chunk.student_text, cut))
        assert chunk.k_sem == pytest.approx(sum(s.phi for s in samples))
    # The teacher saw the recorded prompt and the student's text before each chunk, in order.
    first = emu.emulator.log[0].body["messages"]
    assert first[0]["content"][0]["text"].startswith("Solve problem") and first[1]["role"] == "assistant"
    assert first[1]["content"][-1]["text"].endswith(" w1")
    telemetry = trajectory_rows(store, ids)[0].meta["audit"]["chunks"]
    assert set(telemetry) == {"0", "1"} and telemetry["0"]["attempts"] == 4 and telemetry["0"]["mode"] == "prefill"
    assert 0 <= telemetry["1"]["phi_interior"] <= 1 and telemetry["1"]["n"] == 4
    assert_books_balance(store, emu)
    before = len(emu.emulator.log)
    assert audit_trajectory(ctx, ids[0]).state == "ready"  # a redelivered task finds nothing to do
    assert len(emu.emulator.log) == before


@pytest.mark.parametrize("provider", ["anthropic", "openai", "gemini"])
def test_faults_lose_nothing_and_bill_nothing_twice(audit_env, provider):
    script = ["429", "500", "ok", "timeout", "malformed", "ok", "empty", "truncated", "ok", "429_no_retry_after"]
    store, ctx, emu = audit_env(
        provider, n=3, faults={"script": script, "hang_s": 5.0, "reject_prefill": provider == "anthropic"},
        teacher={"timeout_s": 0.5},
    )
    ids = add_trajectories(store, 2)
    assert [audit_trajectory(ctx, t).state for t in ids] == ["ready", "ready"]
    for chunk in chunk_rows(store, ids):
        assert [s.i for s in samples_of(store, chunk.id)] == [0, 1, 2]
    rows = ledger(store)
    classes = {r.error_class for r in rows}
    assert {"rate_limited", "server_error", "timeout", "malformed", "empty"} <= classes
    if provider == "anthropic":
        assert "prefill_rejected" in classes
        assert trajectory_rows(store, ids)[-1].meta["audit"]["chunks"]["1"]["mode"] == "instruction"
    assert {r.status for r in rows} == {"ok", "error", "unknown"}
    assert_books_balance(store, emu)


def test_a_retry_fetches_only_the_missing_samples(audit_env):
    store, ctx, emu = audit_env("openai", n=4)
    (tid,) = add_trajectories(store, 1, chunks=1, n=4)
    (chunk,) = chunk_rows(store, [tid])
    with store.sessions.begin() as s:  # a previous delivery stored samples 1 and 3, then died
        add_teacher_samples(s, chunk_id=chunk.id, samples=[TeacherSampleIn(1, " kept", " kept", 0.0),
                                                           TeacherSampleIn(3, " kept", " kept", 0.0)])
    assert audit_trajectory(ctx, tid).state == "ready"
    assert [e.body["n"] for e in emu.emulator.log] == [2]
    samples = samples_of(store, chunk.id)
    assert [s.i for s in samples] == [0, 1, 2, 3] and samples[1].text == samples[3].text == " kept"
    assert chunk_rows(store, [tid])[0].k_sem == pytest.approx(sum(s.phi for s in samples))


def test_a_phi_out_of_range_stops_the_audit_with_an_error_instead_of_being_clamped(audit_env, monkeypatch):
    store, ctx, emu = audit_env("openai")
    (tid,) = add_trajectories(store, 1)
    monkeypatch.setitem(similarity._BATCHED, "edit", lambda student, continuations: [1.25] * len(continuations))
    with pytest.raises(PhiRangeError, match=r"phi 'edit' gave 1\.25, outside \[0, 1\]"):
        audit_trajectory(ctx, tid)
    assert [c.state for c in chunk_rows(store, [tid])] == ["pending", "pending"]  # nothing stored as 1.0
    assert all(not samples_of(store, c.id) for c in chunk_rows(store, [tid]))
    assert_books_balance(store, emu)  # the continuations paid for are in the ledger all the same


def test_budget_cap_skips_the_rest_of_the_trajectory_without_overspending(audit_env):
    store, ctx, emu = audit_env("openai", n=3, teacher={"budget_usd": 1.0})
    ids = add_trajectories(store, 4, chunks=3)
    outcomes = [audit_trajectory(ctx, t) for t in ids]
    chunks = chunk_rows(store, ids)
    states = [c.state for c in chunks]
    assert "audited" in states and "skipped_budget" in states and "pending" not in states
    for tid in ids:  # once a chunk is skipped, every later chunk of its trajectory is too
        mine = [c.state for c in chunks if c.trajectory_id == tid]
        assert mine == sorted(mine, key=lambda s: s == "skipped_budget")
    skipped = next(c for c in chunks if c.state == "skipped_budget")
    assert skipped.error.startswith("teacher budget exhausted for provider emu: spent $")
    assert "of cap $1.0000" in skipped.error
    assert any(o.message and "budget exhausted" in o.message for o in outcomes)
    budgets = budget_rows(store)
    assert budgets["emu"].spent_micros <= usd_to_micros(1.0)
    assert_books_balance(store, emu)  # a skipped chunk made no HTTP request
    states = {t.id: t.state for t in trajectory_rows(store, ids)}
    assert "ready" in states.values()
    assert all(state in ("ready", "dropped") for state in states.values())


def test_a_trajectory_without_any_audited_chunk_is_dropped_as_unaudited(audit_env):
    store, ctx, emu = audit_env("openai", sections={"audit": {"budget_usd": 0.0}})
    (tid,) = add_trajectories(store, 1)
    outcome = audit_trajectory(ctx, tid)
    assert (outcome.state, outcome.skipped_budget) == ("dropped", 2)
    assert "teacher budget exhausted for the run (audit.budget_usd): spent $0.0000 of cap $0.0000" in outcome.message
    (traj,) = trajectory_rows(store, [tid])
    assert traj.drop_reason == "unaudited" and emu.emulator.log == []


def test_provider_errors_beyond_retries_wait_for_a_redelivery_then_fail_the_chunk(audit_env):
    store, ctx, emu = audit_env("openai", faults={"error_rate": 1.0}, teacher={"rate_limits": {"max_retries": 1, "backoff_base_s": 0.01}})
    (tid,) = add_trajectories(store, 1)
    first = audit_trajectory(ctx, tid)
    assert first.retry and first.state == "auditing"
    assert [c.state for c in chunk_rows(store, [tid])] == ["pending", "pending"]
    assert len(emu.emulator.log) == 2  # the second chunk waits: cache order
    last = audit_trajectory(ctx, tid, last_delivery=True)
    assert (last.failed, last.state, last.retry) == (2, "dropped", False)
    assert all("still missing after 1 retries" in c.error for c in chunk_rows(store, [tid]))
    assert_books_balance(store, emu)


def test_a_bad_request_fails_only_its_chunk(audit_env):
    # The second chunk's longer prefix does not fit the emulator's context window.
    store, ctx, _emu = audit_env("openai", context_window=116)
    (tid,) = add_trajectories(store, 1)
    outcome = audit_trajectory(ctx, tid)
    assert (outcome.audited, outcome.failed, outcome.state) == (1, 1, "ready")
    failed = chunk_rows(store, [tid])[1]
    assert failed.state == "failed" and "maximum context length" in failed.error  # OpenAI's wording


def test_a_rejected_key_is_a_setup_error_and_the_chunk_stays_pending(audit_env):
    store, ctx, _emu = audit_env("openai", api_key="the-right-key")
    (tid,) = add_trajectories(store, 1)
    with pytest.raises(TeacherSetupError, match="HTTP 401") as err:
        audit_trajectory(ctx, tid)
    assert "Incorrect API key provided: ***" in str(err.value) and "0123456789abcdef" not in str(err.value)
    assert [c.state for c in chunk_rows(store, [tid])] == ["pending", "pending"]
    assert trajectory_rows(store, [tid])[0].state == "auditing"


def test_an_unrecognised_refusal_stops_the_teachers_audits_after_one_unpaid_attempt_and_shows_in_status(audit_env, tmp_path):
    from typer.testing import CliRunner

    from omniopd.cli import app as cli

    store, ctx, emu = audit_env("anthropic", faults={"script": ["refuse"]})
    first, second = add_trajectories(store, 2)
    with pytest.raises(TeacherSetupError, match="not permitted for this organization") as err:
        audit_trajectory(ctx, first)
    assert "does not recognise" in str(err.value) and "sk-test-audit" not in str(err.value)
    [row] = ledger(store)  # the first request goes alone (caching), so one attempt in flight
    assert (row.status, row.error_class, row.http_status, row.cost_micros) == ("error", "refused", 400, 0)
    with pytest.raises(TeacherSetupError, match="not permitted"):
        audit_trajectory(ctx, second)  # stopped: not sent again
    assert len(emu.emulator.log) == 1 and len(ledger(store)) == 1
    assert [c.state for c in chunk_rows(store, [first, second])] == ["pending"] * 4
    status = CliRunner().invoke(cli, ["status", "--config", str(tmp_path / "run.yaml")], terminal_width=250).output
    assert "teacher stopped: teacher emu (claude-sonnet-4-5) refused: HTTP 400 refused: invalid_request_error: This request" in status
    assert "restart the audit workers" in status


def test_teacher_prompt_without_a_recorded_one_is_the_problem_text_for_template_none(audit_env):
    store, ctx, emu = audit_env("openai", generator=scripted([" w2 w3 w4"]), sections={"data": {"prompt_template": "none"}})
    (tid,) = add_trajectories(store, 1, chunks=1, meta={"teacher_prompt": ""})
    assert audit_trajectory(ctx, tid).state == "ready"
    message = emu.emulator.log[0].body["messages"][-1]["content"]
    assert "<task>\nquestion 0\n</task>" in message


def test_refused_reservations_are_exhausted_only_when_they_cannot_fit_at_all():
    views = [BudgetView("emu", 1000, 600, 300), BudgetView("*", None, 600, 300)]
    assert not refusal(views, "emu", 200).exhausted  # fits once the 300 in flight settle
    assert refusal(views, "emu", 500).exhausted


def test_a_contended_budget_waits_for_attempts_in_flight_instead_of_skipping(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "x" * 20)
    store = Store(audit_config(tmp_path / "run.yaml", url="http://127.0.0.1:9", teacher={"budget_usd": 1.0}))
    with store.sessions.begin() as s:  # another worker's attempt holds most of the cap
        other = open_call(s, run_id=store.run_id, provider="emu", model="m", reserve_micros=700_000, idempotency_key="o/0")
    guard = StoreBudgetGuard(store.sessions, store.run_id, "emu", None, wait_s=5.0)
    estimate = AttemptEstimate("k/0", "openai", "m", 1, 10, 10, 10, False)

    def settle_other():
        time.sleep(0.3)
        with store.sessions.begin() as s:
            settle(s, reservation_id=other.reservation_id, actual=100_000)

    threading.Thread(target=settle_other).start()
    asyncio.run(guard.reserve(estimate, 500_000))  # 0.7 + 0.5 > 1 now; fits once the other settles at 0.1
    assert "k/0" in guard._open
    with pytest.raises(BudgetExhausted, match=re.escape("spent $0.1000 of cap $1.0000")):
        asyncio.run(guard.reserve(AttemptEstimate("k/1", "openai", "m", 1, 10, 10, 10, False), 950_000))
    store.engine.dispose()


def test_settled_costs_add_up_exactly_to_the_ledger_and_the_budgets(tmp_path, monkeypatch):
    """Whatever the prices (six decimals per 1M tokens), usages and outcomes, the integer
    micro-dollars settled through the store guard (the reported usage's cost if ok, 0 if
    failed, R if unknown) sum exactly to the ledger's cost and to the provider's and the
    run's spent: no float anywhere on the way."""
    monkeypatch.setenv(KEY_ENV, "x" * 20)
    store = Store(audit_config(tmp_path / "run.yaml", url="http://127.0.0.1:9"))
    guard = StoreBudgetGuard(store.sessions, store.run_id, "emu", None, wait_s=0.0)
    keys = count()
    rate = st.decimals(min_value="0.01", max_value=100, places=6)
    tokens = st.integers(0, 50_000)
    outcome = st.tuples(st.sampled_from(["ok", "failed", "unknown"]), tokens, tokens, tokens, st.integers(1, 8_000))

    def totals() -> tuple[int, int, int]:
        with store.sessions.begin() as s:
            ledger = sum(t.cost_micros for t in ledger_totals(s, run_id=store.run_id))
        spent = budget_rows(store)
        return ledger, spent["emu"].spent_micros, spent["*"].spent_micros

    @settings(max_examples=25, deadline=None)
    @given(st.tuples(rate, rate, rate, rate), st.lists(outcome, min_size=1, max_size=6))
    def check(rates, outcomes):
        price = Price(*(float(r) for r in rates))
        charged = []

        async def attempts() -> None:
            for status, plain, cached, written, out in outcomes:
                usage = Usage(plain, cached, written, out)
                key = f"a/{next(keys)}"
                estimate = AttemptEstimate(key, "anthropic", "m", 1, usage.total_input, 0, usage.total_output, True)
                r = reservation_micros(estimate, price)
                await guard.reserve(estimate, r)
                attempt = Attempt(key, "anthropic", "m", 0, status, "prefill", 1, 1,
                                  usage if status == "ok" else Usage(), 0.1)
                cost = attempt_cost_micros(attempt, price)
                await guard.settle(attempt, cost)
                charged.append(r if cost is None else cost)

        before = totals()
        asyncio.run(attempts())
        after = totals()
        assert [a - b for a, b in zip(after, before, strict=True)] == [sum(charged)] * 3
        assert [a.charged_micros for a in guard.settled[-len(charged):]] == charged

    check()
    store.engine.dispose()


def test_a_trajectory_dropped_during_its_audit_gets_no_more_teacher_calls(audit_env):
    from db.repo_trajectories import drop_trajectories

    holder = {}

    def drop_then_continue(prompt_text: str, n: int) -> list[str]:
        store, tid = holder["store"], holder["tid"]
        with store.sessions.begin() as s:  # the driver drops it as stale while the first chunk is in flight
            drop_trajectories(s, trajectory_ids=[tid], reason="stale_policy")
        return [" w2 w3 w4"] * n

    store, ctx, emu = audit_env("openai", generator=scripted(drop_then_continue))
    (tid,) = add_trajectories(store, 1)
    holder.update(store=store, tid=tid)
    outcome = audit_trajectory(ctx, tid)
    assert outcome.state == "dropped" and len(emu.emulator.log) == 1
    assert [c.state for c in chunk_rows(store, [tid])] == ["audited", "pending"]


def test_a_teacher_without_a_budget_row_in_the_run_is_a_setup_error(audit_env):
    store, _ctx, emu = audit_env("openai")
    other = store.config.model_copy(update={"teachers": {"other": store.config.teachers["emu"]}})
    ctx2 = make_audit_context(other, store.sessions, teacher_name="other")
    try:
        (tid,) = add_trajectories(store, 1)
        with pytest.raises(TeacherSetupError, match="no budget for teacher 'other'"):
            audit_trajectory(ctx2, tid)
        assert emu.emulator.log == []
    finally:
        ctx2.close()


def test_teacher_prompt_without_a_recorded_one_is_the_table7_user_message(audit_env):
    prompts = pytest.importorskip("omniopd.rollout.prompts", reason="the Table 7 renderer comes with the rollout branch")
    store, ctx, emu = audit_env("openai", generator=scripted([" w2 w3 w4"]))
    (tid,) = add_trajectories(store, 1, chunks=1, meta={"teacher_prompt": ""})
    assert audit_trajectory(ctx, tid).state == "ready"
    expected = prompts.user_message("question 0", "table7")
    assert f"<task>\n{expected}\n</task>" in emu.emulator.log[0].body["messages"][-1]["content"]


def test_a_teacher_billing_above_its_reservation_raises_an_alarm_and_its_audits_stop(audit_env, tmp_path, caplog):
    from typer.testing import CliRunner

    from omniopd.cli import app as cli

    store, ctx, emu = audit_env("anthropic", faults={"extra_billed_output_tokens": 5000})
    first, second = add_trajectories(store, 2)
    with caplog.at_level("ERROR", logger="omniopd.audit"), pytest.raises(TeacherSetupError, match=r"billed .* reserved at its worst"):
        audit_trajectory(ctx, first)
    assert any(r.getMessage().startswith("ALARM: teacher emu billed") for r in caplog.records)
    over = [r for r in ledger(store) if r.cost_micros > r.reserved_micros]
    assert over and all(r.status == "ok" for r in over)
    teacher_budget = budget_rows(store)["emu"]
    assert teacher_budget.overbilled_micros == sum(r.cost_micros - r.reserved_micros for r in over)
    assert teacher_budget.alarm.startswith("provider emu billed $")
    sent = len(emu.emulator.log)
    fresh = make_audit_context(store.config, store.sessions)  # a restarted worker: the store refuses it too
    try:
        with pytest.raises(TeacherSetupError, match="bills beyond the limits sent"):
            audit_trajectory(fresh, second)
    finally:
        fresh.close()
    assert len(emu.emulator.log) == sent  # nothing more was sent
    runner = CliRunner()
    for command in ("spend", "status"):
        out = runner.invoke(cli, [command, "--config", str(tmp_path / "run.yaml")], terminal_width=250).output
        assert "ALARM emu: billed $" in out and "omniopd teacher clear-alarm emu" in out, out
    cleared = runner.invoke(cli, ["teacher", "clear-alarm", "emu", "--config", str(tmp_path / "run.yaml")])
    assert cleared.exit_code == 0 and "cleared: provider emu billed" in cleared.output
    assert budget_rows(store)["emu"].alarm is None
