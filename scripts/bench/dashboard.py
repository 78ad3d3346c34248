"""Benchmark the dashboard on a large run: SQL aggregation against aggregating in Python.

A store is filled (bulk inserts, realistic shapes) with one run of `--calls` ledger rows
(default 100,000: two teachers over six hours, 93% ok, 3% HTTP 429, 1% 5xx, 1% unknown
outcome, the rest in flight), one chunk and one audited trajectory per three calls, 2,000
learner steps with their metrics, their consumed bundles, and 20 evaluations. Then, each
`--reps` times:

- sql: the heavy parts of the page (the ledger per provider and time bucket: outcomes,
  429s, tokens, cost with running totals, latency, the last minute's use; the learner
  curve with its policy lag), as the dashboard computes them: db/repo_dashboard.py, GROUP
  BY and window sums in the database;
- python: the same numbers from the same store, the strongest way Python can: one Core
  SELECT of only the needed columns (tuples, no ORM objects), aggregated in dicts. Both
  results are compared (equal, floats to 1e-9) for every size of `--sizes`;
- snapshot: the whole /api/run answer (`run_snapshot`: every query the page needs);
- http: GET /, the script, the style sheet, /api/runs and /api/run of the real aiohttp app;
- browser (when Chromium is installed): Chromium opens the run's page (a link with
  ?source=&run=) served by a real `omniopd dashboard` process, until every panel is drawn
  (`data-state=loaded`).

Printed: median wall time and the 5th-95th percentile interval per measurement, the median
CPU time of this process (where the work is in this process: SQLite's queries, Python's
aggregation; on shared cores it is what the wall time would be on an idle one), and
python / sql. The load average is printed at the end: read wall times against it.

    .venv/bin/python scripts/bench/dashboard.py                       # SQLite, 100,000 calls
    .venv/bin/python scripts/bench/dashboard.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python scripts/bench/dashboard.py --sizes 1000,10000 --reps 5

PostgreSQL's tables are ANALYZEd after the bulk load (autovacuum does it for a real run);
without statistics its planner picks nested loops that take minutes at 100,000 rows.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from db.arrays import pack_f32, pack_i32  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.models import (  # noqa: E402
    Chunk,
    EvalRun,
    LearnerStep,
    Problem,
    TeacherCall,
    Trajectory,
    utcnow,
)
from db.repo_dashboard import (  # noqa: E402
    LEARNER_METRICS,
    learner_series,
    ledger_series,
    provider_totals,
    run_span,
    window_start,
)
from db.repo_runs import open_run  # noqa: E402
from db.session import make_engine, make_session_factory  # noqa: E402

TEACHERS = ("claude", "gemini")
HOURS = 6
STEPS = 2000


def fill(url: str, calls: int, seed: int) -> int:
    """Create the schema and one run of `calls` ledger rows; returns the run id."""
    rng = random.Random(seed)
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    start = utcnow() - timedelta(hours=HOURS)
    with sessions.begin() as s:
        run = open_run(s, name=f"bench-{uuid.uuid4().hex[:8]}", config={}, base_model_path="/base",
                       provider_caps=dict.fromkeys(TEACHERS, 10**9), run_cap=2 * 10**9, now=start)
        n_traj = max(1, calls // 3)
        s.execute(sa.insert(Problem), [{"uid": f"{run.name}-{k}", "content_hash": f"{run.name}-{k}", "prompt": "q",
                                        "answer": "1", "split": "train", "meta": {}, "created_at": start}
                                       for k in range(n_traj)])
        pids = s.scalars(sa.select(Problem.id).where(Problem.uid.startswith(run.name)).order_by(Problem.id)).all()
        arr = pack_i32([1, 2, 3])
        rows = []
        for k, pid in enumerate(pids):
            at = start + timedelta(seconds=HOURS * 3600 * k / n_traj)
            step = 1 + k * STEPS // n_traj
            consumed = k < n_traj * 0.9
            rows.append({
                "run_id": run.id, "problem_id": pid, "policy_version": max(0, step // 10 - rng.randint(0, 1)), "epoch": 0,
                "sample_index": 0, "attempt": 0, "state": "consumed" if consumed else "ready",
                "prompt_token_ids": arr, "completion_token_ids": arr, "logprobs": pack_f32([0.0] * 3),
                "entropies": pack_f32([0.0] * 3), "n_prompt_tokens": 3, "n_completion_tokens": 3, "prompt_text": "p",
                "completion_text": "c", "finish_reason": "stop", "truncated": False, "entropy_source": "exact",
                "consumed_step": step if consumed else None, "audit_requeues": 0, "meta": {}, "created_at": at,
                "updated_at": at, "ready_at": at, "consumed_at": at if consumed else None,
            })
        s.execute(sa.insert(Trajectory), rows)
        tids = s.scalars(sa.select(Trajectory.id).where(Trajectory.run_id == run.id).order_by(Trajectory.id)).all()
        s.execute(sa.insert(Chunk), [
            {"trajectory_id": t, "idx": i, "start": i, "end": i + 1, "char_start": i, "student_text": "x",
             "anchor_entropy": 1.0, "state": "audited", "n_target": 4, "k_sem": 2.0,
             "updated_at": start + timedelta(seconds=HOURS * 3600 * j / len(tids))}
            for j, t in enumerate(tids) for i in range(3)][:calls])
        ledger = []
        for k in range(calls):
            at = start + timedelta(seconds=HOURS * 3600 * k / calls + rng.random())
            roll = rng.random()
            status, http = ("ok", 200) if roll < 0.93 else ("error", 429) if roll < 0.96 else ("error", 500) \
                if roll < 0.97 else ("unknown", None) if roll < 0.98 else ("reserved", None)
            done = status != "reserved"
            ledger.append({
                "run_id": run.id, "provider": TEACHERS[k % 2], "model": f"m-{TEACHERS[k % 2]}", "idempotency_key": str(k),
                "status": status, "n_requested": 4, "n_returned": 4 if status == "ok" else 0,
                "input_tokens": rng.randint(50, 900) if status == "ok" else 0, "cached_input_tokens": 0,
                "cache_write_tokens": 0, "output_tokens": rng.randint(10, 200) if status == "ok" else 0,
                "reasoning_tokens": 0, "reserved_micros": 5000,
                "cost_micros": (rng.randint(100, 4000) if status == "ok" else 5000 if status == "unknown" else 0) if done else None,
                "latency_ms": rng.uniform(50, 3000) if done else None, "http_status": http,
                "error_class": None if status in ("ok", "reserved") else f"HTTP {http}", "created_at": at,
                "finished_at": at + timedelta(seconds=1) if done else None,
            })
        for part in range(0, len(ledger), 20_000):
            s.execute(sa.insert(TeacherCall), ledger[part : part + 20_000])
        s.execute(sa.insert(LearnerStep), [
            {"run_id": run.id, "step": k, "learner_id": "learner-0", "policy_version": k // 10, "loss": 1.0 / k,
             "n_bundles": 16, "n_tokens": 1000, "wall_s": 1.0,
             "metrics": {"kl": 0.01 * rng.random(), "chunk_loss": 0.5 / k, "proxy_mean": rng.random(),
                         "proxy_min": 0.01, "proxy_max": 0.99, "grad_norm": 1.0, "lr": 1e-5, "wait_s": 0.1},
             "created_at": start + timedelta(seconds=HOURS * 3600 * k / STEPS)} for k in range(1, STEPS + 1)])
        s.execute(sa.insert(EvalRun), [
            {"key": f"{run.name}/{k}", "benchmark": "math500", "model": "m", "run_id": run.id, "step": 100 * k,
             "samples": 4, "status": "finished", "config": {}, "pass_at_1": 0.3 + 0.01 * k,
             "metrics": {"ci_low": 0.25, "ci_high": 0.4}, "created_at": start} for k in range(20)])
        run_id = run.id
    if engine.dialect.name == "postgresql":
        # A run's tables grow a little at a time and autovacuum keeps their statistics; a bulk
        # load has none, and PostgreSQL then plans nested loops over 100,000 rows (minutes).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))
    engine.dispose()
    return run_id


# ------------------------------------------------------------------ the Python baseline


def _epoch(dt) -> int:
    return calendar.timegm(dt.timetuple())


def python_parts(session, run_id: int, t0: int, width: int, since, max_points: int = 400) -> dict:
    """ledger_series, provider_totals and learner_series computed from fetched rows."""
    c = TeacherCall
    rows = session.execute(sa.select(
        c.provider, c.model, c.status, c.http_status, c.cost_micros, c.reserved_micros, c.input_tokens,
        c.cached_input_tokens, c.cache_write_tokens, c.output_tokens, c.latency_ms, c.created_at, c.finished_at,
    ).where(c.run_id == run_id)).all()
    cells: dict[tuple[str, int], dict] = {}
    for (p, model, status, http, cost, reserved, inp, cached, write, out, lat, created, finished) in rows:
        a = cells.setdefault((p, (_epoch(created) - t0) // width), {
            "model": model, "calls": 0, "ok": 0, "errors": 0, "unknown": 0, "in_flight": 0, "rate_limited": 0,
            "cost": 0, "reserved": 0, "input": 0, "output": 0, "lat_sum": 0.0, "lat_n": 0, "lat_max": None,
            "recent": 0, "recent_tokens": 0, "recent_limited": 0, "sent": None, "finished": None})
        a["model"] = max(a["model"], model)
        a["calls"] += 1
        a[{"ok": "ok", "error": "errors", "unknown": "unknown", "reserved": "in_flight"}[status]] += 1
        tokens_in = inp + cached + write
        a["rate_limited"] += http == 429
        a["cost"] += cost or 0
        a["reserved"] += reserved if status == "reserved" else 0
        a["input"] += tokens_in
        a["output"] += out
        if lat is not None:
            a["lat_sum"] += lat
            a["lat_n"] += 1
            a["lat_max"] = lat if a["lat_max"] is None else max(a["lat_max"], lat)
        if created >= since:
            a["recent"] += 1
            a["recent_tokens"] += tokens_in + out
            a["recent_limited"] += http == 429
        a["sent"] = created if a["sent"] is None else max(a["sent"], created)
        if finished is not None:
            a["finished"] = finished if a["finished"] is None else max(a["finished"], finished)
    series, running = [], defaultdict(int)
    for (p, b), a in sorted(cells.items()):
        running[p] += a["cost"]
        series.append((p, b, a["model"], a["calls"], a["ok"], a["errors"], a["unknown"], a["in_flight"],
                       a["rate_limited"], a["cost"], running[p], a["reserved"], a["input"], a["output"], a["lat_sum"],
                       a["lat_n"], a["lat_max"], a["recent"], a["recent_tokens"], a["recent_limited"], a["sent"],
                       a["finished"]))
    steps = session.execute(sa.select(LearnerStep.step, LearnerStep.loss, LearnerStep.metrics, LearnerStep.policy_version)
                            .where(LearnerStep.run_id == run_id)).all()
    last = max((s[0] for s in steps), default=0)
    learner = []
    if last:
        w = max(1, -(-last // max_points))
        groups: dict[int, list] = defaultdict(list)
        for row in steps:
            groups[(row[0] - 1) // w].append(row)
        version = {row[0]: row[3] for row in steps}
        lags: dict[int, list[int]] = defaultdict(list)
        for cstep, pv in session.execute(sa.select(Trajectory.consumed_step, Trajectory.policy_version).where(
                Trajectory.run_id == run_id, Trajectory.state == "consumed")):
            if cstep in version:
                lags[(cstep - 1) // w].append(version[cstep] - pv)
        for b, rs in sorted(groups.items()):
            metrics = {}
            for key in LEARNER_METRICS:
                values = [r[2].get(key) for r in rs if r[2].get(key) is not None]
                pick = min if key == "proxy_min" else max if key == "proxy_max" else statistics.fmean
                metrics[key] = pick(values) if values else None
            lag = lags.get(b)
            learner.append((max(r[0] for r in rs), len(rs), statistics.fmean(r[1] for r in rs), metrics,
                            max(lag) if lag else None, statistics.fmean(lag) if lag else None))
    return {"series": series, "learner": learner}


def sql_parts(session, run_id: int, t0: int, width: int, since, max_points: int = 400) -> dict:
    buckets = ledger_series(session, run_id=run_id, t0=t0, width_s=width, since=since)
    provider_totals(buckets)  # part of the work (sums of a few hundred buckets); compared through the buckets
    learner = [(p.step, p.steps, p.loss, p.metrics, p.max_lag, p.mean_lag)
               for p in learner_series(session, run_id=run_id, max_points=max_points)]
    return {"series": [tuple(vars(b).values()) for b in buckets], "learner": learner}


def same(a, b) -> bool:
    """Equal, floats to a relative 1e-9 (SQL and Python sum floats in different orders)."""
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# ------------------------------------------------------------------ timing


CPU: dict[int, list[float]] = {}
"""CPU seconds of this process per timed list (by id): SQLite's work runs in this process, so
on a machine whose cores are shared this is what the wall time would be on an idle core."""


def timed(fn, reps: int) -> list[float]:
    out, cpu = [], []
    for _ in range(reps):
        began, began_cpu = time.perf_counter(), time.process_time()
        fn()
        out.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    CPU[id(out)] = cpu
    return out


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    lo = ordered[max(0, int(0.05 * (len(ordered) - 1)))]
    hi = ordered[round(0.95 * (len(ordered) - 1))]
    return f"{1000 * statistics.median(ordered):8.1f} ms [{1000 * lo:.1f}, {1000 * hi:.1f}]"


def http_page(config: Path, run_name: str, reps: int) -> list[float]:
    from aiohttp.test_utils import TestClient, TestServer

    from omniopd.dashboard.app import make_app
    from omniopd.dashboard.sources import RunSpec

    async def go() -> list[float]:
        async with TestClient(TestServer(make_app(RunSpec(configs=(config,))))) as client:
            times = []
            for _ in range(reps + 1):  # the first opens the store (schema check): not counted
                began = time.perf_counter()
                for path in ("/", "/static/dashboard.js", "/static/dashboard.css", "/api/runs",
                             f"/api/run?source={config}&run={run_name}"):
                    response = await client.get(path)
                    assert response.status == 200, await response.text()
                    await response.read()
                times.append(time.perf_counter() - began)
            return times[1:]

    return asyncio.run(go())


def browser_page(config: Path, name: str, reps: int) -> list[float] | None:
    chromium = Path("/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not chromium.is_file():
        return None
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "omniopd", "dashboard", "-c", str(config), "--port", str(port)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        server.stdout.readline()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            times = []
            for _ in range(reps + 1):
                page = browser.new_page(bypass_csp=True)
                began = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/?source={config}&run={name}")
                page.wait_for_selector("body[data-state=loaded]", timeout=60_000)
                times.append(time.perf_counter() - began)
                page.close()
            browser.close()
        return times[1:]
    finally:
        server.terminate()
        server.wait(10)


def measure(url: str, size: int, reps: int, browser: bool, tmp: Path) -> list[tuple[str, list[float]]]:
    """Fill a store of `size` ledger rows at `url`, check SQL == Python, time every part."""
    from omniopd.dashboard.snapshot import run_snapshot

    run_id = fill(url, size, seed=size)
    engine = make_engine(url)
    sessions = make_session_factory(engine, read_only=True)
    with sessions.begin() as s:
        span = run_span(s, run_id=run_id)
    width, since = span.width_s(120), window_start(utcnow(), 3600.0)
    args = (run_id, span.t0, width, since)
    with sessions.begin() as s:
        if not same(sql_parts(s, *args), python_parts(s, *args)):
            raise SystemExit(f"{url}, {size} calls: SQL and Python disagree")

    def run(fn) -> None:
        with sessions.begin() as s:
            fn(s, *args)

    def snapshot(s, *_args) -> None:
        run_snapshot(s, run_name=span.name, config=None)

    rows = [("sql", timed(lambda: run(sql_parts), reps)), ("python", timed(lambda: run(python_parts), reps)),
            ("snapshot", timed(lambda: run(snapshot), reps))]
    engine.dispose()
    config = tmp / "config.yaml"
    config.write_text(f"run: {{name: {span.name}, output_dir: {tmp}}}\nstore: {{url: '{url}'}}\n")
    rows.append(("http", http_page(config, span.name, reps)))
    if browser:
        shown = browser_page(config, span.name, max(3, reps // 3))
        if shown:
            rows.append(("browser", shown))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="ledger rows per run, comma-separated")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--postgres", help="also measure on this PostgreSQL server (a database is created and dropped)")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    backends = [("sqlite", None)] + ([("postgresql", args.postgres)] if args.postgres else [])
    print(f"{'backend':10} {'calls':>7}  {'measurement':10} {'median [5th, 95th pct]':>30}")
    for backend, admin in backends:
        for size in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                url, drop = _database(backend, admin, Path(tmp))
                try:
                    rows = measure(url, size, args.reps, not args.no_browser and size == max(sizes), Path(tmp))
                finally:
                    drop()
            for label, values in rows:
                cpu = CPU.get(id(values))
                cpu_text = f"   cpu {1000 * statistics.median(cpu):7.1f} ms" if cpu else ""
                print(f"{backend:10} {size:7d}  {label:10} {summary(values):>30}{cpu_text}", flush=True)
            ratio = statistics.median(dict(rows)["python"]) / statistics.median(dict(rows)["sql"])
            print(f"{backend:10} {size:7d}  python/sql {ratio:8.1f}x  (results equal)", flush=True)
    print("load average (1, 5, 15 min):", " ".join(f"{x:.1f}" for x in os.getloadavg()))


def _database(backend: str, admin: str | None, tmp: Path):
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'bench.db'}", lambda: None
    name = f"omniopd_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    return sa.engine.make_url(admin).set(database=name).render_as_string(hide_password=False), drop


if __name__ == "__main__":
    main()
