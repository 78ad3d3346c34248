"""`omniopd rehearse`: a whole run on the production topology (PostgreSQL, Redis or RabbitMQ,
the learner and workers started by scripts/, a vLLM rollout worker, a rate-limited teacher),
then every check of a healthy run (workers/rehearsal/)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from omniopd.cli.common import console, fail


def rehearse(
    config: Annotated[Path, typer.Argument(help="The run's settings (algorithm, learner, teacher); store, broker, "
                                           "paths and limits are filled in by the rehearsal.")] = Path("configs/demo.yaml"),
    broker: Annotated[str, typer.Option(help="redis, rabbitmq, or both (one run each, Redis first).")] = "redis",
    workdir: Annotated[Path, typer.Option(help="Prepared student, runs, logs, rehearsal-results.jsonl.")] = Path("runs/rehearsal"),
    postgres: Annotated[str | None, typer.Option(help="A PostgreSQL URL the rehearsal may use to create and drop its own "
                                                 "database (default: $OMNIOPD_REHEARSAL_POSTGRES_URL).")] = None,
    redis: Annotated[str, typer.Option(help="The Redis of the broker (--broker redis) and of the rate-limit buckets.")] = "redis://127.0.0.1:6379/0",
    rabbitmq: Annotated[str, typer.Option(help="RabbitMQ URL (user, password, host); a vhost of the run's own is "
                                          "created on it with rabbitmqctl and deleted after.")] = "amqp://guest:guest@127.0.0.1:5672",
    max_steps: Annotated[int, typer.Option(min=2, help="Learner steps of each run.")] = 36,
    requests_per_min: Annotated[float, typer.Option(min=1, help="The emulated teacher account's request limit (and the limiter's).")] = 900.0,
    eval_items: Annotated[int, typer.Option(min=10, help="Held-out problems of the Pass@1 before and after (2 samples each).")] = 200,
    cap_usd: Annotated[float | None, typer.Option(min=0, help="A teacher and run cap in USD low enough to be reached: the run "
                                                  "then stops on it, and no attempt may pass it (default: the config's caps).")] = None,
    vllm: Annotated[bool, typer.Option(help="Run the first rollout worker on vLLM (the second on HF).")] = True,
    evaluate: Annotated[bool, typer.Option(help="Pass@1 before and after, and the eval scripts on the final checkpoint.")] = True,
    outage: Annotated[bool, typer.Option("--outage", help="Take the store, then the broker, away mid-run (every process "
                                         "stays up) and check that all lived through it and said what they waited for.")] = False,
    outage_services: Annotated[str, typer.Option(help="With --outage: which go away, in this order (store, broker).")] = "store,broker",
    outage_s: Annotated[float, typer.Option(min=1, help="With --outage: seconds each outage lasts.")] = 15.0,
    outage_after_step: Annotated[int, typer.Option(min=1, help="With --outage: the first begins once the learner "
                                                   "recorded this many steps.")] = 2,
) -> None:
    """Rehearse a production run on the demo task, and check it.

    PostgreSQL store (a database of its own), the machine's Redis or RabbitMQ as broker (a key
    prefix or a vhost of its own; the rate-limit buckets in Redis), the provider emulator as a
    teacher whose rate limit binds, the learner from scripts/start_learner.sh, two rollout
    workers (vLLM and HF), two audit workers and the maintenance worker from
    scripts/start_workers.sh. Checked, with counts: the run finished; every trajectory trained
    exactly once; the ledger equals the teacher's bill and no cap was passed; 429s at most 1%
    of requests while the accepted rate holds at least 90% of the limit; Pass@1 improved;
    scripts/eval_math.sh and eval_code.sh graded the final checkpoint. With --outage the store
    (its database refuses connections) and then the broker (the run's own redis-server stopped,
    or the run's own TCP gate to RabbitMQ closed) go away for --outage-s seconds each, mid-run; also
    checked: every process lived through them and logged what it waited for. Exit 1 if a
    check failed.
    """
    from workers.rehearsal.outage import SERVICES, OutagePlan
    from workers.rehearsal.run import RehearsalSettings
    from workers.rehearsal.run import rehearse as run_rehearsal

    url = postgres or os.environ.get("OMNIOPD_REHEARSAL_POSTGRES_URL")
    if not url:
        fail("give --postgres postgresql+psycopg://user@host/db (a database the rehearsal may connect to; it creates "
             "and drops one database per run) or set OMNIOPD_REHEARSAL_POSTGRES_URL")
    if broker not in ("redis", "rabbitmq", "both"):
        fail(f"--broker {broker!r}: expected redis, rabbitmq or both")
    if not config.is_file():
        fail(f"no config file {config}")
    services = tuple(x.strip() for x in outage_services.split(",") if x.strip())
    if outage and (not services or any(x not in SERVICES for x in services)):
        fail(f"--outage-services {outage_services!r}: expected a comma-separated list of {', '.join(SERVICES)}")
    plan = OutagePlan(services, outage_s, outage_after_step) if outage else None
    workdir.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in (("redis", "rabbitmq") if broker == "both" else (broker,)):
        settings = RehearsalSettings(
            workdir=workdir, postgres_url=url, redis_url=redis, broker=name, rabbitmq_url=rabbitmq,
            config_path=config, max_steps=max_steps, requests_per_min=requests_per_min, vllm=vllm, evaluate=evaluate,
            eval_items=eval_items, cap_usd=cap_usd, outage=plan,
            log=console.print,
        )
        result = run_rehearsal(settings)
        console.print(f"[bold]rehearsal on {name}[/] ({result.seconds:.0f} s): "
                      f"{'[green]ok[/]' if result.ok else '[bold red]FAILED[/]'}", soft_wrap=True)
        for check in result.checks:
            mark = "[green]ok[/]" if check.ok else "[bold red]FAILED[/]"
            console.print(f"  {mark} {check.name}: {check.counts}", soft_wrap=True, highlight=False)
        with (workdir / "rehearsal-results.jsonl").open("a") as handle:
            handle.write(json.dumps({"broker": name, "ok": result.ok, "seconds": result.seconds, "numbers": result.numbers,
                                     "checks": [c.__dict__ for c in result.checks]}) + "\n")
        if not result.ok:
            failed.append(name)
    if failed:
        raise typer.Exit(1)
