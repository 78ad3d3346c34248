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

    .venv/bin/python scripts/bench/store.py                        # both backends, 1/4/16 clients
    .venv/bin/python scripts/bench/store.py --backends sqlite --seconds 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
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


def _client(kind: str, url: str, run_id: int, seconds: float, start, counts, elapsed, index: int, step_base: int) -> None:
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
            if not got:
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
    procs = [ctx.Process(target=_client, args=(kind, url, run_id, seconds, start, counts, elapsed, k, step_base)) for k in range(clients)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let every client connect before the clock starts
    start.set()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"{kind} client failed (exit {p.exitcode})")
    return sum(counts) / max(elapsed)  # the measured windows only, not the clean-up after them


def prepare(url: str, bundles: int) -> int:
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
        conn.execute(sa.text("DELETE FROM bench_counter"))
        conn.execute(sa.text("INSERT INTO bench_counter (id, n) VALUES (:i, 0)"), [{"i": k} for k in range(64)])
    sessions = make_session_factory(engine)
    now = utcnow()
    with sessions.begin() as s:
        run_id = open_run(s, name="bench", config={}, base_model_path="base", provider_caps={"p": 10**15},
                          run_cap=10**15).id
        s.execute(sa.insert(Problem.__table__), [{"uid": "bench", "content_hash": "bench", "prompt": "q", "answer": "a",
                                                  "tests": None, "split": "bench", "source": None, "meta": {},
                                                  "created_at": now}])
        problem_id = s.scalar(sa.select(Problem.id))
        tokens = pack_i32(range(256))
        floats = pack_f32([0.5] * 256)
        s.execute(sa.insert(Trajectory.__table__), [
            {"run_id": run_id, "problem_id": problem_id, "policy_version": 0, "epoch": 0, "sample_index": k,
             "attempt": 0, "state": "ready", "prompt_token_ids": tokens[:64], "completion_token_ids": tokens,
             "logprobs": floats, "entropies": floats, "n_prompt_tokens": 16, "n_completion_tokens": 256,
             "prompt_text": "q", "completion_text": "text " * 256, "finish_reason": "stop", "truncated": False,
             "entropy_source": "exact", "audit_requeues": 0, "meta": {}, "created_at": now, "updated_at": now,
             "ready_at": now}
            for k in range(bundles)
        ])
    if engine.dialect.name == "postgresql":  # planner statistics, as autovacuum keeps them on a live table
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))
    engine.dispose()
    return run_id


def run_backend(name: str, url: str, client_counts: list[int], seconds: float, bundles: int) -> list[dict]:
    run_id = prepare(url, bundles)
    rows = []
    for clients in client_counts:
        row = {"backend": name, "clients": clients}
        row["baseline"] = measure("baseline", url, run_id, clients, seconds)
        row["reservations"] = measure("reservations", url, run_id, clients, seconds)
        row["claims"] = measure("claims", url, run_id, clients, seconds, step_base=clients * 1000)
        rows.append(row)
        print(f"  {name:10s} {clients:2d} clients: {row['reservations']:8.0f} reservations/s  "
              f"{row['claims']:8.0f} claims/s  {row['baseline']:8.0f} baseline tx/s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| backend | clients | reservations/s | claims/s | baseline UPDATE tx/s | reservations / baseline | claims / baseline | goal (PostgreSQL: 200 res/s, 100 claims/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        goal = "-"
        if r["backend"] == "postgresql":
            goal = (f"{r['reservations'] / GOALS['reservations']:.1f}x / {r['claims'] / GOALS['claims']:.1f}x "
                    + ("met" if r["reservations"] >= GOALS["reservations"] and r["claims"] >= GOALS["claims"] else "NOT met"))
        lines.append(
            f"| {r['backend']} | {r['clients']} | {r['reservations']:.0f} | {r['claims']:.0f} | {r['baseline']:.0f} | "
            f"{r['reservations'] / r['baseline']:.2f} | {r['claims'] / r['baseline']:.2f} | {goal} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated numbers of concurrent client processes")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured wall time per cell")
    parser.add_argument("--bundles", type=int, default=20_000, help="ready bundles created for the claim cells")
    parser.add_argument("--postgres-admin-url", default=os.environ.get(
        "OMNIOPD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL URL allowed to CREATE DATABASE (a scratch database is created and dropped)")
    args = parser.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]
    rows: list[dict] = []
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                rows += run_backend("sqlite", f"sqlite:///{tmp}/bench.db", client_counts, args.seconds, args.bundles)
        elif backend == "postgresql":
            admin = sa.create_engine(args.postgres_admin_url, isolation_level="AUTOCOMMIT")
            name = f"omniopd_bench_{uuid.uuid4().hex[:10]}"
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            try:
                url = sa.engine.make_url(args.postgres_admin_url).set(database=name).render_as_string(hide_password=False)
                rows += run_backend("postgresql", url, client_counts, args.seconds, args.bundles)
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
