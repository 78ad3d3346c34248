"""A run's store filled through the real repositories, as the processes of a run fill it:
rollout batches recorded by a named worker, chunks audited with teacher samples, one ledger
row per HTTP attempt (reserved, then settled: ok, 429, 500 and an unknown outcome), learner
steps consuming bundles, published policy versions and evaluations with intervals.

Used by the dashboard's tests and its benchmark instead of a live demo where the numbers
must be known and chosen (a teacher cap reached exactly, 429s), and in seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from db.migrate import upgrade
from db.models import utcnow
from db.problem_files import ProblemRow
from db.repo_audit import (
    TeacherSampleIn,
    add_teacher_samples,
    begin_audit,
    complete_chunk,
    promote_if_complete,
)
from db.repo_bundles import claim_ready_bundles, record_step_and_consume
from db.repo_eval import finish_eval_run, open_eval_run
from db.repo_ledger import TokenUsage, close_call, open_call
from db.repo_problems import import_problems, problem_ids
from db.repo_rollouts import issue_batch, record_batch
from db.repo_runs import open_run, publish_policy_version, set_run_status
from db.repo_trajectories import ChunkIn, SlotKey, TrajectoryIn, record_trajectories
from db.session import make_engine, make_session_factory

TEACHER = "emulated"
MODEL = "gemini-2.5-flash"
KEY_ENV = "OMNIOPD_DASHBOARD_TEST_KEY"


@dataclass(frozen=True)
class Filled:
    """What was written: the config file of the run, and the teacher's cap in micro-USD."""

    config_path: Path
    run_name: str
    teacher_cap_micros: int
    workdir: Path


def write_config(run_dir: Path, *, name: str, store_url: str, teacher_cap_usd: float | None, run_cap_usd: float | None,
                 broker_url: str | None = None) -> Path:
    """A run config for the store (an embedded broker unless `broker_url` is given)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "run": {"name": name, "output_dir": str(run_dir)},
        "store": {"url": store_url},
        "broker": {"mode": "redis", "url": broker_url} if broker_url else {"mode": "embedded"},
        "teachers": {TEACHER: {
            "kind": "gemini", "model": MODEL, "base_url": "http://127.0.0.1:9", "api_key_env": KEY_ENV,
            "rate_limits": {"requests_per_min": 600, "input_tokens_per_min": 100000}, "budget_usd": teacher_cap_usd,
        }},
        "audit": {"teacher": TEACHER, "budget_usd": run_cap_usd},
        "learner": {"max_steps": 4, "batch_size": 2, "max_policy_lag": 1},
    }
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def fill_run(url: str, run_dir: Path, *, name: str = "dash-run", calls: int = 12, steps: int = 3,
             cap_reached: bool = True, broker_url: str | None = None, status: str = "running") -> Filled:
    """Migrate the store at `url` and fill one run (see the module docstring). With
    `cap_reached` the teacher's cap is set to exactly what its calls cost."""
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    cost_each, reserve_each = 1234, 5000  # micro-USD per ok call; the worst case reserved
    with sessions.begin() as s:
        run = open_run(s, name=name, config={"run": {"name": name}}, base_model_path="/models/base",
                       provider_caps={TEACHER: None}, run_cap=None)
        import_problems(s, rows=[ProblemRow(k + 1, f"{name}-p{k}", f"2+{k}=?", str(2 + k), None, "train", None, {},
                                            f"{name}-hash-{k}") for k in range(2 * steps + 2)])
        pids = problem_ids(s, split="train")[-(2 * steps + 2):]
        set_run_status(s, run_id=run.id, status="running")
    trajectory_ids = []
    for k, pid in enumerate(pids):
        with sessions.begin() as s:
            slot = SlotKey(pid, 0, 0, 0)
            batch = issue_batch(s, run_id=run.id, target_version=k // 4, slots=[slot])
            text = "2 + 1 = 3 so 3"
            (rec,) = record_trajectories(s, trajectories=[TrajectoryIn(
                run_id=run.id, problem_id=pid, policy_version=k // 4, slot=slot, prompt_token_ids=[1, 2],
                completion_token_ids=list(range(8)), logprobs=[-0.5] * 8, entropies=[1.0] * 8, prompt_text="<p>",
                completion_text=text, finish_reason="stop", truncated=False, entropy_source="exact",
                chunks=[ChunkIn(start=2, end=4, char_start=2, student_text="+ 1", anchor_entropy=1.2, n_target=2)],
                meta={"worker": "rollout-1@host"},
            )])
            record_batch(s, batch_id=batch, meta={"worker": f"rollout-{1 + k % 2}@host"})
            trajectory_ids.append(rec.id)
        with sessions.begin() as s:
            work = begin_audit(s, trajectory_id=rec.id)
            chunk = work.chunks[0]
            add_teacher_samples(s, chunk_id=chunk.id, samples=[
                TeacherSampleIn(i, "+ 1", "+ 1", phi) for i, phi in ((0, 1.0), (1, 0.5))])
            complete_chunk(s, chunk_id=chunk.id, k_sem=1.5)
            promote_if_complete(s, trajectory_id=rec.id)
    outcomes = ["ok"] * (calls - 3) + ["429", "500", "unknown"]
    spent = 0
    for k, outcome in enumerate(outcomes):
        with sessions.begin() as s:
            call = open_call(s, run_id=run.id, provider=TEACHER, model=MODEL, reserve_micros=reserve_each,
                             idempotency_key=f"{name}-{k}", n_requested=2)
        with sessions.begin() as s:
            if outcome == "ok":
                spent += close_call(s, call_id=call.id, status="ok", usage=TokenUsage(input=100, output=20),
                                    cost_micros=cost_each, http_status=200, latency_ms=40.0 + k, n_returned=2)
            elif outcome == "unknown":
                spent += close_call(s, call_id=call.id, status="unknown", usage=TokenUsage(), cost_micros=None,
                                    http_status=None, latency_ms=None, error_class="ReadTimeout")
            else:
                spent += close_call(s, call_id=call.id, status="error", usage=TokenUsage(), cost_micros=None,
                                    http_status=int(outcome), latency_ms=5.0, error_class=f"HTTP {outcome}")
    with sessions.begin() as s:  # one attempt still in flight
        open_call(s, run_id=run.id, provider=TEACHER, model=MODEL, reserve_micros=reserve_each,
                  idempotency_key=f"{name}-flying", n_requested=2)
    held = reserve_each
    for step in range(1, steps + 1):
        with sessions.begin() as s:
            bundles = claim_ready_bundles(s, run_id=run.id, limit=2, min_policy_version=0, learner_id="learner-0",
                                          lease_s=600)
            record_step_and_consume(
                s, run_id=run.id, step=step, learner_id="learner-0", trajectory_ids=[b.trajectory_id for b in bundles],
                policy_version=(step - 1) // 2, loss=1.0 / step, n_tokens=16,
                metrics={"kl": 0.01 * step, "chunk_loss": 0.5 / step, "proxy_mean": 0.4, "proxy_min": 0.1, "proxy_max": 0.9},
            )
            if step % 2 == 0:
                publish_policy_version(s, run_id=run.id, version=step // 2, path=f"/ckpt/{step}", step=step)
    with sessions.begin() as s:
        for step, value in ((0, 0.25), (steps, 0.5)):
            ev = open_eval_run(s, key=f"{name}/demo/{step}", benchmark="demo", model="m", samples=4, config={},
                               run_id=run.id, step=step)
            finish_eval_run(s, eval_run_id=ev.id, pass_at_1=value,
                            metrics={"pass_at_1": value, "ci_low": value - 0.1, "ci_high": value + 0.125})
        if status != "running":
            set_run_status(s, run_id=run.id, status=status)
    cap = spent + held if cap_reached else 10 * (spent + held)
    with sessions.begin() as s:  # re-applying caps is what a restarted run with a new config does
        open_run(s, name=name, config={}, base_model_path="/models/base", provider_caps={TEACHER: cap}, run_cap=None,
                 now=utcnow())
    engine.dispose()
    config_path = write_config(run_dir, name=name, store_url=url, teacher_cap_usd=cap / 1e6, run_cap_usd=None,
                               broker_url=broker_url)
    (run_dir / "plan.json").write_text(json.dumps({
        "per_trajectory": {"cost_usd": 0.0015}, "run": {"cost_usd": 0.012}, "trajectories": 8, "prompt_tokens": 20.0,
        "trajectory_tokens": 8.0, "trajectory_source": "given"}))
    return Filled(config_path, name, cap, run_dir.parent)
