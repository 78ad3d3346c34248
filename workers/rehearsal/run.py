"""One production rehearsal: the demo task on the production topology, started the way a
user starts a real run, and checked end to end.

    the store       a PostgreSQL database of the rehearsal's own (created, dropped at the end)
    the broker      the machine's Redis (a key prefix of the run's own) or RabbitMQ (a vhost
                    of the run's own); the rate-limit buckets in that Redis either way
    the teacher     the provider emulator (Gemini wire format) serving the demo's expert,
                    with a requests-per-minute limit low enough that the limiter binds: the
                    teacher, not the student, sets the pace
    the learner     scripts/start_learner.sh CONFIG (db upgrade, spend forecast, learner)
    the workers     scripts/start_workers.sh CONFIG: two rollout workers (the first on vLLM,
                    the second on HF), two audit worker processes, the maintenance worker;
                    started before the learner, once the run row exists, so that the vLLM
                    worker has built its engine (minutes on a CPU) when training starts
    evaluation      scripts/eval_math.sh on the base student and on the final checkpoint
                    (the demo benchmark: Pass@1 before and after), then scripts/eval_math.sh
                    and scripts/eval_code.sh on the final checkpoint with small slices of
                    MATH-500 and APPS (graded for real, the code in the sandbox)

Checked at the end (`Check`s, each with its counts): the run finished; every trajectory
trained exactly once; the ledger equals the teacher's own bill, attempt for attempt, and no
cap was passed; 429s are at most 1% of requests while the accepted rate holds at least 90%
of the limit in steady state; Pass@1 improved; the evaluation scripts graded the checkpoint.

With outages (`--outage`, workers/rehearsal/outage.py) the store and then the broker go away
for a while mid-run (the Redis broker is then a redis-server of the run's own, the rate-limit
buckets staying on the machine's Redis); also checked: the outages happened, every process
lived through them, and each logged what it waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from omniopd.config import OmniConfig, dump_config, load_config
from workers.chaos import invariants
from workers.chaos.invariants import Check
from workers.chaos.run import Database, RedisServer
from workers.rehearsal import outage
from workers.rehearsal.outage import OutagePlan, Outages
from workers.rehearsal.tcp_gate import TcpGate

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "OMNIOPD_REHEARSAL_KEY"
TEACHER = "emulated"
STEADY = (0.2, 0.8)  # the steady state: this middle part of the time the teacher was called
MATH_FIXTURE = ROOT / "tests" / "eval" / "data" / "public_math500.jsonl"
CODE_FIXTURE = ROOT / "tests" / "eval" / "data" / "public_apps.jsonl"


@dataclass
class RehearsalSettings:
    workdir: Path
    postgres_url: str  # a database the harness may connect to, to create and drop its own
    redis_url: str  # the machine's Redis: the broker (broker="redis") and the rate-limit buckets
    broker: str = "redis"  # redis | rabbitmq
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672"  # a vhost of the run's own is made on it
    config_path: Path = ROOT / "configs" / "demo.yaml"
    max_steps: int = 36
    requests_per_min: float = 900.0  # the emulated account's limit (and the limiter's): binds at 36 steps of 16
    vllm: bool = True  # the first rollout worker on vLLM
    evaluate: bool = True  # Pass@1 before and after, and the eval scripts on the checkpoint
    eval_items: int = 200
    cap_usd: float | None = None  # a teacher and run cap low enough to be reached (the run then stops on it)
    deadline_s: float = 1200.0
    outage: OutagePlan | None = None  # the store and/or the broker go away mid-run (outage.py)
    log: Callable[[str], None] = print


@dataclass
class RehearsalResult:
    broker: str
    checks: list[Check] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def rehearse(settings: RehearsalSettings) -> RehearsalResult:
    """Prepare the student (cached), run the rehearsal, return every check with its counts."""
    from omniopd.demo.prepare import PrepareSpec, prepare

    started = time.monotonic()
    prepared = prepare(settings.workdir / "prepared", PrepareSpec(seed=0), settings.log)
    result = RehearsalResult(settings.broker)
    out = settings.workdir / f"run-{settings.broker}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    key = "rehearsal-" + secrets.token_hex(12)
    env = {**os.environ, KEY_ENV: key, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "OMNIOPD_ROLLOUT_WARM": "1"}  # the vLLM worker builds its engine before taking a batch
    db = Database(settings.postgres_url, f"omniopd_rehearsal_{settings.broker}_{os.getpid()}")
    db.create()
    try:
        with RunBroker(settings, out) as broker:
            _run(settings, prepared, out, key, env, db, broker, result)
    finally:
        db.drop()
    result.seconds = round(time.monotonic() - started, 1)
    return result


class RunBroker:
    """The broker section of the run's config, and its cleanup (a RabbitMQ vhost, Redis keys,
    the run's own redis-server).

    With a broker outage, a Redis run gets a redis-server of its own on a free port (the
    machine's Redis is shared and never stopped), and a RabbitMQ run reaches the server
    through a TCP gate of its own (workers/rehearsal/tcp_gate.py); the rate-limit buckets
    stay on the machine's Redis, so the outage takes away the broker and nothing else."""

    def __init__(self, settings: RehearsalSettings, out: Path):
        self.settings, self.vhost, self.server, self.gate = settings, None, None, None
        self.prefix = f"omniopd-rehearsal-{secrets.token_hex(5)}:"
        self.out = out
        self.config: list[str] = []  # the broker's settings of the run's config

    def __enter__(self) -> RunBroker:
        self.config = self._config()
        return self

    def _config(self) -> list[str]:
        s = self.settings
        if s.broker == "rabbitmq":
            from workers.rehearsal.vhost import temporary_vhost

            self.vhost = temporary_vhost(s.rabbitmq_url, prefix="omniopd-rehearsal")
            url = self.vhost.__enter__()
            if s.outage is not None and "broker" in s.outage.services:
                parts = urlsplit(url)
                self.gate = TcpGate(parts.hostname or "127.0.0.1", parts.port or 5672)
                self.gate.start()
                url = parts._replace(netloc=parts.netloc.rpartition("@")[0] + f"@127.0.0.1:{self.gate.port}").geturl()
            return ["broker.mode=rabbitmq", f"broker.url={url}", f"broker.ratelimit_url={s.redis_url}"]
        url = s.redis_url
        if s.outage is not None and "broker" in s.outage.services:
            self.server = RedisServer(self.out / "broker-redis")
            self.server.start()
            url = self.server.url
        return ["broker.mode=redis", f"broker.url={url}", f"broker.ratelimit_url={s.redis_url}",
                f"broker.key_prefix='{self.prefix}'", "broker.visibility_timeout_s=300"]

    def __exit__(self, *exc) -> None:
        if self.vhost is not None:
            self.vhost.__exit__(None, None, None)
        if self.server is not None:
            self.server.stop()
        if self.gate is not None:
            self.gate.stop()
        import redis

        client = redis.Redis.from_url(self.settings.redis_url)
        for name in client.scan_iter(match=f"{self.prefix}*", count=1000):
            client.delete(name)
        client.close()


def _config(settings: RehearsalSettings, prepared, out: Path, store_url: str, broker: list[str],
            teacher_url: str) -> OmniConfig:
    backends = "[vllm,hf]" if settings.vllm else "[hf,hf]"
    return load_config(settings.config_path, [
        f"run.name=rehearsal-{settings.broker}-{secrets.token_hex(3)}", f"run.output_dir={out}",
        f"student.path={prepared.student}", f"data.train={prepared.train_file}", f"eval.data_dir={prepared.eval_dir}",
        "eval.every_steps=null", f"store.url={store_url}", *broker,
        f"teachers.{TEACHER}.base_url={teacher_url}", f"teachers.{TEACHER}.api_key_env={KEY_ENV}",
        f"teachers.{TEACHER}.rate_limits.requests_per_min={settings.requests_per_min}",
        f"learner.max_steps={settings.max_steps}", "learner.tensorboard=false", "learner.checkpoint_every=4",
        "workers.rollout=2", "workers.audit=2", f"workers.rollout_backends={backends}",
        "rollout.vllm.cpu_kvcache_gb=1",
        *([f"teachers.{TEACHER}.budget_usd={settings.cap_usd}", f"audit.budget_usd={settings.cap_usd}"]
          if settings.cap_usd is not None else []),
    ])


def _run(settings: RehearsalSettings, prepared, out: Path, key: str, env: dict, db: Database, broker: RunBroker,
         result: RehearsalResult) -> None:
    from omniopd.teachers.emulator import EmulatorConfig, EmulatorThread
    from omniopd.teachers.emulator.generators import from_spec

    emulator = EmulatorConfig(provider="gemini", api_key=key, seed=0,
                              limits={"requests_per_min": settings.requests_per_min})
    with EmulatorThread(emulator, from_spec("py:omniopd.demo.expert:generator")) as teacher:
        cfg = _config(settings, prepared, out, db.url, broker.config, teacher.url)
        config = out / "config.yaml"
        config.write_text(dump_config(cfg))
        c = str(config)
        logs = out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        _script(["omniopd", "db", "upgrade", "-c", c], env, logs / "db.log")
        _script(["omniopd", "data", "import", "-c", c], env, logs / "data.log")
        _create_run(cfg, c)
        before = _demo_pass(settings, c, str(prepared.student), out / "eval" / "before", env, logs) if settings.evaluate else {}
        settings.log(f"[{settings.broker}] starting the workers, then the learner (logs {logs})")
        t0 = time.monotonic()
        learner, outages, outage_checks = None, None, []
        try:
            # Workers first: the vLLM engine takes minutes to start on a CPU, and a learner
            # already running would have finished on the HF worker alone by then.
            _script(["bash", "scripts/start_workers.sh", c], env, logs / "start_workers.log")
            _wait_for_engines(logs, settings)
            result.numbers["engines_s"] = round(time.monotonic() - t0, 1)
            # A cap meant to be reached is above the spend forecast: --force starts anyway (the cap still holds)
            force = ["--force"] if settings.cap_usd is not None else []
            learner = _start(["bash", "scripts/start_learner.sh", c, *force, "--no-progress"], env, logs / "learner.log")
            outages = _start_outages(settings, db, broker, logs, learner)
            try:
                finished, reason = _wait(learner, settings, logs)
            finally:
                if outages is not None:
                    outages.stop()
            if outages is not None:  # before the workers are stopped: were they all still there?
                outage_checks = [outage.outages_happened(outages),
                                 outage.survived(outages, _pid_alive, learner.returncode)]
        finally:
            _script(["bash", "scripts/start_workers.sh", c, "--stop", "--timeout", "60"], env,
                    logs / "start_workers.log", check=False)
            if learner is not None and learner.poll() is None:
                os.killpg(learner.pid, signal.SIGTERM)
                try:
                    learner.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(learner.pid, signal.SIGKILL)
        result.numbers["train_s"] = round(time.monotonic() - t0, 1)
        paused = [] if outages is None else outage.pauses(outages.windows, teacher.emulator.t0)
        result.checks = _checks(cfg, teacher, finished, reason, settings, result, paused)
        if settings.evaluate:
            final = _final_checkpoint(cfg)
            after = _demo_pass(settings, c, str(final), out / "eval" / "after", env, logs)
            result.checks.append(pass_improved(before, after, final.name, result))
            result.checks.append(_eval_scripts(c, final, out, env, logs))
        result.checks.append(rollout_workers_worked(logs, settings))
        if outages is not None:
            password = urlsplit(settings.rabbitmq_url).password if settings.broker == "rabbitmq" else None
            result.checks += [*outage_checks, outage.said_what_they_waited_for(outages, logs, password)]
            result.numbers["outages"] = {w.service: w.seconds for w in outages.windows}


def _start_outages(settings: RehearsalSettings, db: Database, broker: RunBroker, logs: Path,
                   learner: subprocess.Popen) -> Outages | None:
    """The outage harness's thread, waiting for the learner's first steps (None: no outage)."""
    if settings.outage is None:
        return None
    outages = Outages(settings.outage, db.url, db, settings.broker, broker.server, broker.gate,
                      lambda line: settings.log(f"[{settings.broker}] {line.strip()}"))

    def watch() -> dict[str, int]:
        pids = {"learner": learner.pid}
        for pidfile in logs.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids[pidfile.stem] = int(pidfile.read_text().strip())
        return pids

    outages.start(watch)
    return outages


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


CLI = "omniopd"


def _script(args: list[str], env: dict, log: Path, *, check: bool = True) -> int:
    """Run a command of the repository (scripts/..., or `omniopd ...`) to completion, output to `log`."""
    if args[0] == CLI:  # the project's command, run with this interpreter
        import sys

        args = [sys.executable, "-m", "omniopd", *args[1:]]
    with log.open("ab") as handle:
        code = subprocess.run(args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL).returncode
    if check and code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(args[:4])} failed (exit {code}); {log} ends:\n{tail}")
    return code


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("ab") as handle:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _wait(learner: subprocess.Popen, settings: RehearsalSettings, logs: Path) -> tuple[bool, str]:
    """Wait for the learner to exit by itself; (finished, its reason)."""
    deadline = time.monotonic() + settings.deadline_s
    while learner.poll() is None:
        if time.monotonic() > deadline:
            return False, f"the learner did not finish within {settings.deadline_s:.0f} s (log {logs / 'learner.log'})"
        dead = [p.name for p in logs.glob("*.pid") if not _alive(p)]
        if dead:
            settings.log(f"[{settings.broker}] worker(s) exited early: {', '.join(dead)}")
        time.sleep(1.0)
    lines = (logs / "learner.log").read_text(errors="replace").splitlines()
    stops = [line.strip() for line in lines if "learner stopped:" in line]
    reason = stops[-1] if stops else "the learner printed no reason"
    return learner.returncode == 0, f"exit {learner.returncode}: {reason}"


def _create_run(cfg: OmniConfig, config: str) -> None:
    """Create the run row (with its budgets and policy version 0) the way its learner would,
    so the workers can start, and build their engines, before the learner."""
    from db.store import open_store
    from workers.store import ensure_run

    store = open_store(cfg, config, pool_size=1)
    try:
        with store.sessions.begin() as session:
            ensure_run(session, cfg)
    finally:
        store.dispose()


def _wait_for_engines(logs: Path, settings: RehearsalSettings, timeout_s: float = 900.0) -> None:
    """Wait until the vLLM rollout worker has built its engine (it does before taking work)."""
    if not settings.vllm:
        return
    log = logs / "rollout-0.log"
    deadline = time.monotonic() + timeout_s
    while "rollout engine (vllm) started" not in (log.read_text(errors="replace") if log.is_file() else ""):
        if not _alive(logs / "rollout-0.pid"):
            raise RuntimeError(f"the vLLM rollout worker exited while starting its engine; its log {log} ends:\n"
                               + log.read_text(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            raise RuntimeError(f"the vLLM rollout worker did not start its engine within {timeout_s:.0f} s (log {log})")
        time.sleep(2.0)
    settings.log(f"[{settings.broker}] the vLLM rollout worker is ready")


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def _final_checkpoint(cfg: OmniConfig) -> Path:
    from omniopd.train.checkpoint import latest_checkpoint

    info = latest_checkpoint(Path(cfg.run.output_dir) / "checkpoints")
    if info is None:
        raise RuntimeError(f"the run left no checkpoint in {cfg.run.output_dir}/checkpoints")
    return Path(info.path)


def _demo_pass(settings: RehearsalSettings, config: str, model: str, out: Path, env: dict, logs: Path) -> dict:
    """The `demo` score of scripts/eval_math.sh on the held-out problems (Pass@1, its 95%
    interval, and per item n samples of which c were right). Four samples per problem, as the
    demo's own evaluation: with two, a run that gained +5.0 points had a paired interval whose
    low end was +0.0, and the improvement check failed on evaluation noise."""
    run_env = {**env, "BENCHMARKS": "demo", "SAMPLES": "4"}
    _script(["bash", "scripts/eval_math.sh", config, model, "--max-items", str(settings.eval_items), "--out", str(out),
             "--set", "rollout.backend=hf"], run_env, logs / "eval.log")
    return json.loads((out / "results.json").read_text())["benchmarks"]["demo"]["score"]


def pass_improved(before: dict, after: dict, checkpoint: str, result: RehearsalResult) -> Check:
    """Pass@1 rose, judged on the same problems (eval.passk.paired_difference: a paired
    bootstrap over problems of the per-problem change): the one-sided 95% lower bound of the
    gain (the low end of its 90% interval) lies above zero. One-sided because the question is
    "did it improve"; 36 steps gave gains of +5.8 to +18.5 points over four runs on this
    machine, the smallest with a two-sided 95% interval of [-0.2, +11.8] (the demo's own
    learning test asserts a large gain)."""
    from eval.passk import paired_difference
    from eval.results import BenchmarkScore

    gain = paired_difference(BenchmarkScore.from_dict(before), BenchmarkScore.from_dict(after), confidence=0.90)
    result.numbers.update(pass_before=before["pass_at_1"], pass_after=after["pass_at_1"], gain=round(gain.value, 4),
                          gain_ci=(round(gain.ci_low, 4), round(gain.ci_high, 4)))
    return Check("Pass@1 improved", gain.ci_low > 0,
                 f"{100 * before['pass_at_1']:.1f}% [{100 * before['ci_low']:.1f}, {100 * before['ci_high']:.1f}] -> "
                 f"{100 * after['pass_at_1']:.1f}% [{100 * after['ci_low']:.1f}, {100 * after['ci_high']:.1f}] on "
                 f"{gain.n_items} held-out problems ({checkpoint}); gain {100 * gain.value:+.1f} points, paired 90% "
                 f"interval [{100 * gain.ci_low:+.1f}, {100 * gain.ci_high:+.1f}] (its low end: the one-sided 95% bound)")


def rollout_workers_worked(logs: Path, settings: RehearsalSettings) -> Check:
    """Both rollout workers generated batches: the first on vLLM (when asked), the second on HF."""
    counts, engines = {}, {}
    for log in sorted(logs.glob("rollout-*.log")):
        text = log.read_text(errors="replace")
        counts[log.stem] = text.count("workers.rollout.task: rollout batch ")
        engines[log.stem] = next((line.split("rollout engine (")[1].split(")")[0] for line in text.splitlines()
                                  if "rollout engine (" in line), "none started")
    want = {"rollout-0": "vllm" if settings.vllm else "hf", "rollout-1": "hf"}
    ok = len(counts) == 2 and all(counts[w] > 0 and engines[w] == b for w, b in want.items())
    return Check("every rollout worker generated on its backend", ok,
                 "; ".join(f"{w}: {counts[w]} batches on {engines[w]}" for w in sorted(counts)))


def _eval_scripts(config: str, checkpoint: Path, out: Path, env: dict, logs: Path) -> Check:
    """scripts/eval_math.sh and scripts/eval_code.sh on the final checkpoint, with two-item slices
    of MATH-500 and APPS (converted from their public release format): every item sampled and
    graded (the tiny student solves none; that they are graded is what this checks)."""
    data = out / "eval-data"
    data.mkdir(parents=True, exist_ok=True)
    _script(["omniopd", "data", "convert", "math500", str(MATH_FIXTURE), str(data / "math500.jsonl")], env, logs / "eval.log")
    _script(["omniopd", "data", "convert", "apps", str(CODE_FIXTURE), str(data / "apps.jsonl")], env, logs / "eval.log")
    graded = {}
    for script, bench in (("eval_math.sh", "math500"), ("eval_code.sh", "apps")):
        target = out / "eval" / bench
        run_env = {**env, "BENCHMARKS": bench, "SAMPLES": "1", "DATA_DIR": str(data), "MAX_ITEMS": "2"}
        _script(["bash", f"scripts/{script}", config, str(checkpoint), "--max-items", "2", "--out", str(target),
                 "--set", "rollout.backend=hf"], run_env, logs / "eval.log")
        report = json.loads((target / "results.json").read_text())["benchmarks"][bench]
        graded[bench] = report
    counts = "; ".join(f"{b}: {r['score'].get('n_items', '?')} items, Pass@1 {r['score']['pass_at_1']:.2f}"
                       for b, r in graded.items())
    ok = all(r["score"].get("n_items", 0) > 0 for r in graded.values())
    return Check("scripts/eval_math.sh and eval_code.sh graded the final checkpoint", ok, counts)


def _checks(cfg: OmniConfig, teacher, finished: bool, reason: str, settings: RehearsalSettings,
            result: RehearsalResult, paused: list[tuple[float, float]]) -> list[Check]:
    from db.repo_runs import get_run
    from db.store import open_store

    log = list(teacher.emulator.log)
    store = open_store(cfg, read_only=True, pool_size=1)
    try:
        with store.sessions.begin() as s:
            run_id = get_run(s, name=cfg.run.name).id
            sampler = invariants.CapSampler()
            return [
                invariants.outcome(finished, reason),
                trained_exactly_once(s, run_id),
                ledger_is_the_bill(s, run_id, cfg, log),
                invariants.caps_kept(sampler, s, run_id),
                rate_limit_held(log, settings.requests_per_min, result, paused),
                *([cap_reached_and_kept(s, run_id, cfg, len(log), reason)] if settings.cap_usd is not None else []),
            ]
    finally:
        store.dispose()


def trained_exactly_once(session, run_id: int) -> Check:
    """Every trajectory consumed belongs to exactly one recorded step, and every trajectory
    is either consumed or has a stated end (dropped with a reason, or left unconsumed when the
    run reached max_steps)."""
    from sqlalchemy import func, select

    from db.models import LearnerStep, Trajectory

    once = invariants.trained_at_most_once(session, run_id)
    states = dict(session.execute(select(Trajectory.state, func.count()).where(Trajectory.run_id == run_id)
                                  .group_by(Trajectory.state)).all())
    steps = session.scalar(select(func.count()).select_from(LearnerStep).where(LearnerStep.run_id == run_id)) or 0
    batch = session.scalar(select(func.min(LearnerStep.n_bundles)).where(LearnerStep.run_id == run_id)) or 0
    return Check("every trajectory trained exactly once", once.ok and steps > 0 and batch > 0,
                 f"{once.counts}; trajectories by state {states}")


def ledger_is_the_bill(session, run_id: int, cfg: OmniConfig, log) -> Check:
    """One ledger row per request the teacher received, and the ledger's charge equals the
    teacher's own bill (its log priced at the teacher's price), attempt for attempt."""
    from sqlalchemy import func, select

    from db.models import TeacherCall
    from omniopd.teachers import teacher_price
    from omniopd.teachers.pricing import cost_micros
    from omniopd.teachers.types import Usage

    price = teacher_price(cfg.teachers[TEACHER], cfg.audit.prices_file)
    billed = sum(cost_micros(Usage(**{k: e.usage.get(k, 0) for k in ("input", "cached_input", "cache_write", "output",
                                                                      "reasoning")}), price)
                 for e in log if e.usage)
    rows, charged = session.execute(select(func.count(), func.coalesce(func.sum(TeacherCall.cost_micros), 0)).where(
        TeacherCall.run_id == run_id)).one()
    return Check("the ledger is the sum of the billed attempts", rows == len(log) and charged == billed,
                 f"teacher received {len(log)} requests billing {billed} micro-USD; ledger {rows} attempts "
                 f"charging {charged} micro-USD")


def cap_reached_and_kept(session, run_id: int, cfg: OmniConfig, requests: int, reason: str) -> Check:
    """The cap bound (the learner stopped on it, chunks were skipped for budget) and no
    attempt went beyond it: every request the teacher received has its ledger row, made
    under a reservation of its worst case, and the ledger's total is within the cap."""
    from sqlalchemy import func, select

    from db.models import Chunk, TeacherCall, Trajectory
    from omniopd.money import usd_to_micros

    cap = usd_to_micros(cfg.teachers[TEACHER].budget_usd)
    rows, charged = session.execute(select(func.count(), func.coalesce(func.sum(TeacherCall.cost_micros), 0)).where(
        TeacherCall.run_id == run_id)).one()
    unreserved = session.scalar(select(func.count()).select_from(TeacherCall).where(
        TeacherCall.run_id == run_id, TeacherCall.reservation_id.is_(None))) or 0
    skipped = session.scalar(select(func.count()).select_from(Chunk).join(Trajectory, Trajectory.id == Chunk.trajectory_id)
                             .where(Trajectory.run_id == run_id, Chunk.state == "skipped_budget")) or 0
    ok = "teacher budget spent" in reason and skipped > 0 and charged <= cap and rows == requests and unreserved == 0
    return Check("no attempt after the cap", ok,
                 f"cap {cap} micro-USD, ledger {charged} in {rows} attempts ({unreserved} without a reservation) for "
                 f"{requests} requests received; {skipped} chunks skipped for budget; {reason}")


def rate_limit_held(log, per_min: float, result: RehearsalResult, paused: list[tuple[float, float]] = ()) -> Check:
    """429s at most 1% of the requests, and in the steady state (the middle of the time the
    teacher was called) the accepted requests reach at least 90% of the limit. The times
    `paused` (outages and their recovery, in the emulator's seconds, not overlapping) are cut
    out of the timeline first: no work reaches the teacher while the store or the broker is
    away, and a short capped run could otherwise have its whole steady state inside one."""
    if not log:
        return Check("the limiter held the rate limit", False, "the teacher received no request")
    limited = sum(e.status == 429 for e in log)

    def active(t: float) -> float | None:
        """`t` on the timeline without the pauses (None: inside one)."""
        cut = 0.0
        for a, b in paused:
            if t >= b:
                cut += b - a
            elif t >= a:
                return None
        return t - cut

    times = [(active(e.t_start), e.status) for e in log]
    starts = sorted(t for t, _ in times if t is not None)
    if not starts:
        return Check("the limiter held the rate limit", False, "every request fell inside an outage")
    span = starts[-1] - starts[0]
    lo, hi = starts[0] + STEADY[0] * span, starts[0] + STEADY[1] * span
    out = sum(b - a for a, b in paused)
    accepted = sum(status != 429 and t is not None and lo <= t < hi for t, status in times)
    rate = accepted / max(hi - lo, 1e-9) * 60.0
    result.numbers.update(requests=len(log), rate_limited=limited, steady_per_min=round(rate, 1), limit_per_min=per_min)
    ok = limited <= 0.01 * len(log) and rate >= 0.9 * per_min
    return Check("the limiter held the rate limit", ok,
                 f"{len(log)} requests, {limited} answered 429 ({100 * limited / len(log):.2f}%); steady state "
                 f"({STEADY[0]:.0%}-{STEADY[1]:.0%} of {span:.0f} s{f' after cutting out {out:.0f} s of outages' if paused else ''}): "
                 f"{rate:.0f} accepted/min of a {per_min:.0f}/min limit ({100 * rate / per_min:.0f}%)")
