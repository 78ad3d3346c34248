"""Benchmark the store's two contended operations: budget reservations and bundle claims.

For each backend (SQLite file, PostgreSQL) and 1, 4, 16 concurrent client processes it
measures, for a fixed wall time per cell:

- reservations/s: committed `reserve()` transactions (row locks on the run's and the
  provider's budget, the cap check, the update, the reservation row); each is settled
  after the measured window, as an audit worker would after its call;
- claims/s: committed `claim_ready_bundles(limit=1)` transactions (SKIP LOCKED on
  PostgreSQL, the write lock on SQLite), each loading its bundle; the claimed bundles
  are consumed with `record_step_and_consume` after the window;
- baseline: the same clients committing a bare single-row `UPDATE counter` transaction —
  the floor cost of one write transaction on that backend — so the ratio shows what the
  correctness machinery costs.

Each cell runs `--repeats` times, interleaved with the other kinds (median [min, max] in the
table; the ratios are per round). Every claim cell claims from a fresh run with its own
`--bundles` ready bundles; a cell whose pool runs dry stops the benchmark with an error
instead of printing a rate computed over a shortened window.

    .venv/bin/python scripts/bench/store.py                        # both backends, 1/4/16 clients
    .venv/bin/python scripts/bench/store.py --backends sqlite --seconds 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import sqlalchemy as sa

from db.arrays import pack_f32, pack_i32
from db.migrate import upgrade
from db.models import Problem, Trajectory, utcnow
from db.repo_budget import reserve, settle
from db.repo_bundles import claim_ready_bundles, record_step_and_consume
from db.repo_runs import open_run
from db.session import make_engine, make_session_factory

GOALS = {"reservations": 200.0, "claims": 100.0}  # per second, PostgreSQL (issue 3)


def _client(kind: str, url: str, run_id: int, seconds: float, start, counts, elapsed, exhausted, index: int, step_base: int) -> None:
    engine = make_engine(url, pool_size=1)
    sessions = make_session_factory(engine)
    done = 0
    held: list[int] = []
    learner = f"bench-{index}"
    start.wait()
    began = time.monotonic()
    deadline = began + seconds
    while time.monotonic() < deadline:
        if kind == "reservations":
            with sessions.begin() as s:
                held.append(reserve(s, run_id=run_id, provider="p", amount=1).id)
        elif kind == "claims":
            with sessions.begin() as s:
                got = claim_ready_bundles(s, run_id=run_id, limit=1, min_policy_version=0, learner_id=learner,
                                          lease_s=3600)
            if not got:  # the cell's pool ran dry: its rate would be wrong, so fail loudly
                exhausted[index] = 1
                break
            held.append(got[0].trajectory_id)
        else:  # baseline
            with sessions.begin() as s:
                s.execute(sa.text("UPDATE bench_counter SET n = n + 1 WHERE id = :i"), {"i": index})
        done += 1
    counts[index] = done
    elapsed[index] = time.monotonic() - began
    # Outside the measured window, finish the work as the audit worker / learner would.
    if kind == "reservations":
        for reservation_id in held:
            with sessions.begin() as s:
                settle(s, reservation_id=reservation_id, actual=1)
    elif kind == "claims" and held:
        with sessions.begin() as s:
            record_step_and_consume(s, run_id=run_id, step=step_base + index + 1, learner_id=learner,
                                    trajectory_ids=held, policy_version=0, metrics={})
    engine.dispose()


def measure(kind: str, url: str, run_id: int, clients: int, seconds: float, step_base: int = 0) -> float:
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    counts = ctx.Array("i", clients)
    elapsed = ctx.Array("d", clients)
    exhausted = ctx.Array("i", clients)
    procs = [ctx.Process(target=_client, args=(kind, url, run_id, seconds, start, counts, elapsed, exhausted, k, step_base))
             for k in range(clients)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let every client connect before the clock starts
    start.set()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"{kind} client failed (exit {p.exitcode})")
    if any(exhausted):
        raise RuntimeError(
            f"{kind} with {clients} clients ran out of ready bundles after {sum(counts)} claims in "
            f"{max(elapsed):.1f} s: the rate would be understated; rerun with a larger --bundles"
        )
    return sum(counts) / max(elapsed)  # the measured windows only, not the clean-up after them


def prepare(url: str) -> None:
    """The schema, the baseline's counter rows and the one problem every bundle points at."""
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
        conn.execute(sa.text("DELETE FROM bench_counter"))
        conn.execute(sa.text("INSERT INTO bench_counter (id, n) VALUES (:i, 0)"), [{"i": k} for k in range(64)])
    with make_session_factory(engine).begin() as s:
        s.execute(sa.insert(Problem.__table__), [{"uid": "bench", "content_hash": "bench", "prompt": "q", "answer": "a",
                                                  "tests": None, "split": "bench", "source": None, "meta": {},
                                                  "created_at": utcnow()}])
    engine.dispose()


def new_run(url: str, bundles: int) -> int:
    """A fresh run with its own pool of `bundles` ready bundles, so no cell claims from another's."""
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    now = utcnow()
    with sessions.begin() as s:
        run_id = open_run(s, name=f"bench-{uuid.uuid4().hex[:8]}", config={}, base_model_path="base",
                          provider_caps={"p": 10**15}, run_cap=10**15).id
        problem_id = s.scalar(sa.select(Problem.id).where(Problem.uid == "bench"))
        tokens = pack_i32(range(256))
        floats = pack_f32([0.5] * 256)
        rows = [
            {"run_id": run_id, "problem_id": problem_id, "policy_version": 0, "epoch": 0, "sample_index": k,
             "attempt": 0, "state": "ready", "prompt_token_ids": tokens[:64], "completion_token_ids": tokens,
             "logprobs": floats, "entropies": floats, "n_prompt_tokens": 16, "n_completion_tokens": 256,
             "prompt_text": "q", "completion_text": "text " * 256, "finish_reason": "stop", "truncated": False,
             "entropy_source": "exact", "audit_requeues": 0, "meta": {}, "created_at": now, "updated_at": now,
             "ready_at": now}
            for k in range(bundles)
        ]
        if rows:
            s.execute(sa.insert(Trajectory.__table__), rows)
    if bundles and engine.dialect.name == "postgresql":  # planner statistics, as autovacuum keeps them on a live table
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))
    engine.dispose()
    return run_id


KINDS = ("baseline", "reservations", "claims")


def run_backend(name: str, url: str, client_counts: list[int], seconds: float, bundles: int, repeats: int) -> list[dict]:
    """Per client count, `repeats` interleaved rounds of the three kinds; each claim cell and
    each reservation cell gets a run of its own (its own bundle pool and budget rows)."""
    prepare(url)
    rows = []
    for clients in client_counts:
        row = {"backend": name, "clients": clients, **{k: [] for k in KINDS}}
        for _ in range(repeats):
            row["baseline"].append(measure("baseline", url, new_run(url, 0), clients, seconds))
            row["reservations"].append(measure("reservations", url, new_run(url, 0), clients, seconds))
            row["claims"].append(measure("claims", url, new_run(url, bundles), clients, seconds, step_base=clients * 1000))
        rows.append(row)
        print(f"  {name:10s} {clients:2d} clients: " + "  ".join(f"{k} {spread(row[k])}/s" for k in KINDS), flush=True)
    return rows


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    """'median [min, max]'."""
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}, {fmt.format(max(values))}]"


def table(rows: list[dict]) -> str:
    lines = [
        "| backend | clients | reservations/s | claims/s | baseline UPDATE tx/s | reservations / baseline | claims / baseline | goal (PostgreSQL: 200 res/s, 100 claims/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        med = {k: statistics.median(r[k]) for k in KINDS}
        goal = "-"
        if r["backend"] == "postgresql":
            goal = (f"{med['reservations'] / GOALS['reservations']:.1f}x / {med['claims'] / GOALS['claims']:.1f}x "
                    + ("met" if med["reservations"] >= GOALS["reservations"] and med["claims"] >= GOALS["claims"] else "NOT met"))
        ratio = {k: [x / b for x, b in zip(r[k], r["baseline"], strict=True)] for k in ("reservations", "claims")}
        lines.append(
            f"| {r['backend']} | {r['clients']} | {spread(r['reservations'])} | {spread(r['claims'])} | {spread(r['baseline'])} | "
            f"{spread(ratio['reservations'], '{:.2f}')} | {spread(ratio['claims'], '{:.2f}')} | {goal} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated numbers of concurrent client processes")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured wall time per cell")
    parser.add_argument("--bundles", type=int, default=20_000,
                        help="ready bundles created for each claim cell (a cell that runs out fails loudly)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per cell; median [min, max] over them")
    parser.add_argument("--postgres-admin-url", default=os.environ.get(
        "OMNIOPD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL URL allowed to CREATE DATABASE (a scratch database is created and dropped)")
    args = parser.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]
    rows: list[dict] = []
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                rows += run_backend("sqlite", f"sqlite:///{tmp}/bench.db", client_counts, args.seconds, args.bundles, args.repeats)
        elif backend == "postgresql":
            admin = sa.create_engine(args.postgres_admin_url, isolation_level="AUTOCOMMIT")
            name = f"omniopd_bench_{uuid.uuid4().hex[:10]}"
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            try:
                url = sa.engine.make_url(args.postgres_admin_url).set(database=name).render_as_string(hide_password=False)
                rows += run_backend("postgresql", url, client_counts, args.seconds, args.bundles, args.repeats)
            finally:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
        else:
            parser.error(f"unknown backend {backend!r}")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
