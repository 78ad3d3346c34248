"""The dashboard in a real headless Chromium, served by a real `omniopd dashboard` process.

The numbers are checked on stores filled through the real repositories (tests/dashboard/
fill.py), where they are chosen and stand still: a live run's numbers move between the
page's read and the test's. That the page loads against a live `omniopd demo` is checked
in tests/workers/demo/test_demo_e2e.py, during the demo run that test makes anyway.
"""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import func, select

from db.models import TeacherCall
from db.repo_budget import budgets
from db.repo_runs import get_run
from db.session import make_engine, make_session_factory
from tests.dashboard.browser import chromium, dashboard_process, keep_screenshot, wait_loaded
from tests.dashboard.fill import TEACHER, fill_run, write_config


def usd(micros: int) -> str:
    return f"${micros / 1_000_000:.6f}"


def store_facts(url: str, name: str) -> dict:
    """What the store says, read with the plain repositories and SQL, not the dashboard's code."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine, read_only=True).begin() as s:
            run = get_run(s, name=name)
            views = {b.provider: b for b in budgets(s, run_id=run.id)}
            calls = dict(s.execute(select(TeacherCall.status, func.count()).where(TeacherCall.run_id == run.id)
                                   .group_by(TeacherCall.status)).all())
            limited = s.scalar(select(func.count()).where(TeacherCall.run_id == run.id, TeacherCall.http_status == 429))
            cost = s.scalar(select(func.sum(TeacherCall.cost_micros)).where(TeacherCall.run_id == run.id))
    finally:
        engine.dispose()
    return {"budgets": views, "calls": calls, "limited": limited, "cost": cost}


@pytest.mark.slow
def test_page_numbers_equal_the_store_and_a_reached_cap_shows_reached(tmp_path):
    workdir = tmp_path / "work"
    full = fill_run(f"sqlite:///{workdir / 'full-s0' / 'omniopd.db'}", workdir / "full-s0", name="demo-full-s0")
    fill_run(f"sqlite:///{workdir / 'no-kl-s0' / 'omniopd.db'}", workdir / "no-kl-s0", name="demo-no-kl-s0",
             cap_reached=False, calls=8, status="finished")
    facts = store_facts(f"sqlite:///{workdir / 'full-s0' / 'omniopd.db'}", "demo-full-s0")
    with dashboard_process("--workdir", str(workdir)) as address, chromium() as browser:
        page = browser.new_page()
        page.goto(f"{address}?source=full-s0&run=demo-full-s0")
        wait_loaded(page)
        # both variants of the work directory side by side
        assert page.locator("#runs-table tbody tr[data-run]").count() == 2
        assert page.locator("tr[data-run='demo-no-kl-s0'] [data-field=reached]").inner_text() == "none"
        assert page.locator("tr[data-run='demo-full-s0'] [data-field=reached]").inner_text() == f"REACHED: {TEACHER}"
        # budgets: every amount equals the budget rows, to the micro-dollar
        teacher = facts["budgets"][TEACHER]
        row = page.locator(f"#budgets tr[data-budget='{TEACHER}']")
        assert row.locator("[data-field=spent]").inner_text() == usd(teacher.spent)
        assert row.locator("[data-field=reserved]").inner_text() == usd(teacher.reserved)
        assert row.locator("[data-field=cap]").inner_text() == usd(full.teacher_cap_micros) == usd(teacher.cap)
        assert row.locator("[data-field=headroom]").inner_text() == usd(teacher.cap - teacher.spent - teacher.reserved)
        assert row.locator("[data-field=reached]").inner_text().strip() == "REACHED"
        run_row = page.locator("#budgets tr[data-budget='run']")
        assert run_row.locator("[data-field=spent]").inner_text() == usd(facts["budgets"]["*"].spent)
        assert run_row.locator("[data-field=cap]").inner_text() == "none"
        assert run_row.locator("[data-field=reached]").count() == 0
        # the ledger: attempts by outcome, 429s, cost
        prov = page.locator(f"#providers tr[data-provider='{TEACHER}']")
        calls = facts["calls"]
        assert prov.locator("[data-field=calls]").inner_text() == str(sum(calls.values()))
        for field, status in (("ok", "ok"), ("errors", "error"), ("unknown", "unknown"), ("in-flight", "reserved")):
            assert prov.locator(f"[data-field={field}]").inner_text() == str(calls.get(status, 0)), field
        assert prov.locator("[data-field=rate-limited]").inner_text() == str(facts["limited"]) == "1"
        assert page.locator("#forecast [data-field=total]").inner_text() == usd(facts["cost"])
        # learner, workers and evaluations are drawn
        assert page.locator("#loss-chart polyline").count() >= 1
        assert page.locator("#workers tr[data-worker='learner-0'] [data-field=done]").inner_text() == "3 steps"
        assert page.locator("#eval-table tr[data-eval='demo@3'] [data-field=pass]").inner_text() == "50.0%"
        assert page.locator("#eval-table tr[data-eval='demo@3'] [data-field=interval]").inner_text() == "40.0% – 62.5%"
        keep_screenshot(page, tmp_path, "dashboard-filled")


@pytest.mark.slow
def test_bad_input_shows_words_and_the_page_keeps_serving(tmp_path):
    workdir = tmp_path / "work"
    fill_run(f"sqlite:///{workdir / 'good' / 'omniopd.db'}", workdir / "good", name="good-run")
    # a store without the schema (an empty SQLite file), a store whose database is down
    bare = workdir / "bare"
    write_config(bare, name="bare-run", store_url=f"sqlite:///{bare / 'omniopd.db'}", teacher_cap_usd=None, run_cap_usd=None)
    (bare / "omniopd.db").touch()
    down = workdir / "down"
    write_config(down, name="down-run", store_url="postgresql+psycopg://postgres@127.0.0.1:9/nowhere",
                 teacher_cap_usd=None, run_cap_usd=None)
    with dashboard_process("--workdir", str(workdir)) as address, chromium() as browser:
        page = browser.new_page()
        page.goto(f"{address}?source=good&run=no-such-run")
        wait_loaded(page)
        message = page.locator("#message").inner_text()
        assert "no run named 'no-such-run'" in message and "good-run" in message
        assert "has no OmniOPD schema yet" in message and "omniopd db upgrade" in message
        assert "cannot reach the store" in message
        assert page.locator("tr.error-row").count() == 2
        keep_screenshot(page, tmp_path, "dashboard-bad-input")
        # it keeps serving: the good run opens from the same page
        page.click("tr[data-run='good-run'] a")
        page.wait_for_selector("#detail:not([hidden])")
        assert page.locator("#run-title").inner_text() == "good / good-run"
        # the bare store gets its schema while the dashboard runs: the page recovers by itself
        shutil.rmtree(bare)
        fill_run(f"sqlite:///{bare / 'omniopd.db'}", bare, name="bare-run")
        page.reload()
        wait_loaded(page)
        assert page.locator("tr[data-run='bare-run']").count() == 1
