"""Audit-test helpers: a run config whose teacher is an emulator, trajectories that look
like a student's (word tokens, chunks with their prefixes), and ledger/store readers."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from sqlalchemy import func, select

from db.models import Budget, Chunk, TeacherCall, TeacherSample, Trajectory
from db.repo_trajectories import ChunkIn, SlotKey, TrajectoryIn, record_trajectories
from tests.db.conftest import make_problems
from tests.workers.conftest import Store
from workers.app import AUDIT_TASK, audit_queue, enqueue_after_commit, make_celery

KEY_ENV = "OMNIOPD_TEST_AUDIT_KEY"
PRICES = {"input": 1000.0, "cached_input": 100.0, "cache_write": 1250.0, "output": 5000.0}
"""Per 1M tokens; large so that one tiny attempt costs whole micro-dollars."""


def audit_config(path: Path, *, url: str, kind: str = "anthropic", model: str = "claude-sonnet-4-5", n: int = 3,
                 teacher: dict | None = None, **sections) -> Path:
    """A run config auditing with one emulated teacher `emu` (fast retries, short timeouts)."""
    data = {
        "run": {"name": "audit-test", "output_dir": str(path.parent / "out")},
        "teachers": {
            "emu": {
                "kind": kind, "model": model, "base_url": url, "api_key_env": KEY_ENV, "prices": PRICES,
                "timeout_s": 2.0, "concurrency": 4,
                "rate_limits": {"max_retries": 6, "backoff_base_s": 0.01, "backoff_max_s": 0.05},
                **(teacher or {}),
            }
        },
        "audit": {"teacher": "emu", "retry_delay_s": 0.2},
        "estimator": {"n": n, "phi": "edit", "cut": "words"},
        "chunking": {"m": 2, "c": 3},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path.write_text(yaml.safe_dump(data))
    return path


def words(k: int, start: int = 0) -> list[str]:
    return [f" w{j}" for j in range(start, start + k)]


def add_trajectories(store: Store, count: int, *, chunks: int = 2, n: int = 3, tokens: int = 16, chunk_len: int = 3,
                     meta: dict | None = None) -> list[int]:
    """`count` trajectories of `tokens` word tokens with `chunks` chunks each; the teacher
    prompt is recorded in meta as the rollout worker does."""
    with store.sessions.begin() as s:
        pids = make_problems(s, count, split=f"a{time.monotonic_ns()}")
        items = []
        for p in pids:
            toks = words(tokens)
            text = "".join(toks)
            spans = [(2 + 5 * c, 2 + 5 * c + chunk_len) for c in range(chunks)]
            items.append(TrajectoryIn(
                run_id=store.run_id, problem_id=p, policy_version=0, slot=SlotKey(p, 0, 0, 0),
                prompt_token_ids=[1, 2, 3], completion_token_ids=list(range(tokens)),
                logprobs=[-0.5] * tokens, entropies=[1.0] * tokens,
                prompt_text="<|im_start|>user\nquestion<|im_end|>\n<|im_start|>assistant\n",
                completion_text=text, finish_reason="stop", truncated=False, entropy_source="exact",
                chunks=[ChunkIn(start=a, end=b, char_start=len("".join(toks[:a])), student_text="".join(toks[a:b]),
                                anchor_entropy=2.0, n_target=n) for a, b in spans],
                meta={"teacher_prompt": f"Solve problem {p}.", **(meta or {})},
            ))
        return [r.id for r in record_trajectories(s, trajectories=items)]


def ledger(store: Store) -> list[TeacherCall]:
    with store.sessions.begin() as s:
        return list(s.scalars(select(TeacherCall).order_by(TeacherCall.id)))


def budget_rows(store: Store) -> dict[str, Budget]:
    with store.sessions.begin() as s:
        return {b.provider: b for b in s.scalars(select(Budget).where(Budget.run_id == store.run_id))}


def chunk_rows(store: Store, ids: list[int]) -> list[Chunk]:
    with store.sessions.begin() as s:
        return list(s.scalars(select(Chunk).where(Chunk.trajectory_id.in_(ids)).order_by(Chunk.id)))


def samples_of(store: Store, chunk_id: int) -> list[TeacherSample]:
    with store.sessions.begin() as s:
        return list(s.scalars(select(TeacherSample).where(TeacherSample.chunk_id == chunk_id).order_by(TeacherSample.i)))


def trajectory_rows(store: Store, ids: list[int]) -> list[Trajectory]:
    with store.sessions.begin() as s:
        return list(s.scalars(select(Trajectory).where(Trajectory.id.in_(ids)).order_by(Trajectory.id)))


def count(store: Store, model) -> int:
    with store.sessions.begin() as s:
        return s.scalar(select(func.count()).select_from(model))


def student_like(seed: int = 0):
    """An emulator generator that continues the word sequence of the prompt ('w7' -> ' w8 w9 ...'),
    changing each word with probability 1/3, so phi takes values inside (0, 1)."""
    import random
    import re

    from omniopd.teachers.emulator import scripted

    rng = random.Random(seed)

    def generate(prompt_text: str, n: int) -> list[str]:
        found = re.findall(r"w(\d+)", prompt_text)
        last = int(found[-1]) if found else -1
        out = []
        for _ in range(n):
            out.append("".join(f" w{last + 1 + j}" if rng.random() > 1 / 3 else f" x{rng.randrange(9)}" for j in range(6)))
        return out

    return scripted(generate)


def assert_books_balance(store: Store, emu) -> None:
    """One ledger row per HTTP request; ok rows carry exactly the usage of the responses that
    could be read; errors cost 0, unknown outcomes their reservation; budgets = ledger."""
    rows = ledger(store)
    assert len(rows) == len(emu.emulator.log)
    delivered = [e for e in emu.emulator.log if e.delivered]
    ok = [r for r in rows if r.status == "ok"]
    assert len(ok) == len(delivered)
    for field in ("input", "cached_input", "cache_write", "output"):
        column = {"input": "input_tokens", "cached_input": "cached_input_tokens", "cache_write": "cache_write_tokens",
                  "output": "output_tokens"}[field]
        assert sum(getattr(r, column) for r in ok) == sum(e.usage[field] for e in delivered)
    assert all(r.cost_micros == 0 for r in rows if r.status == "error")
    assert all(r.cost_micros == r.reserved_micros for r in rows if r.status == "unknown")
    assert all(r.cost_micros <= r.reserved_micros for r in rows)
    budgets = budget_rows(store)
    assert budgets["emu"].spent_micros == budgets["*"].spent_micros == sum(r.cost_micros for r in rows)
    assert budgets["emu"].reserved_micros == budgets["*"].reserved_micros == 0


# ----------------------------------------------------- real worker processes


def production_config(tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str, url: str, **kwargs) -> Path:
    broker = {"mode": "redis", "url": redis_url, "key_prefix": redis_prefix, "visibility_timeout_s": 600}
    broker.update(kwargs.pop("broker", {}))
    return audit_config(tmp_path / "run.yaml", url=url, store={"url": postgres_url}, broker=broker, **kwargs)


def start_worker(processes, config: Path, log: Path, *args: str, key: str = "sk-test-audit-0123456789abcdef"):
    return processes(
        ["-m", "omniopd", "worker", "audit", "--config", str(config), "--concurrency", "2", "--loglevel", "DEBUG", *args],
        log, env={KEY_ENV: key},
    )


def enqueue(store: Store, redis_url: str, ids: list[int], teacher: str = "emu") -> None:
    app = make_celery(store.config, broker_url=redis_url)
    with store.sessions.begin() as s:
        for tid in ids:
            enqueue_after_commit(s, app.signature(AUDIT_TASK, args=(tid,), queue=audit_queue(teacher)))
