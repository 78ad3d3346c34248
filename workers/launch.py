"""Start a Celery worker process for a role: the generic launcher behind `omniopd worker ...`.

    run_worker(config, queues=["rollouts"], pool="solo", concurrency=1)          # GPU rollouts
    run_worker(config, queues=[audit_queue(t)], pool="threads", concurrency=8)   # teacher audits
    run_worker(config, queues=["maintenance"], pool="solo", beat=True)           # maintenance

It refuses a store whose schema is behind (with the command that fixes it), resolves
the broker (embedded mode: joins the run's private Redis or starts it, and then stops it
when this worker exits), builds the app and runs the worker in the foreground until
SIGTERM/Ctrl-C (warm shutdown: the running task finishes, or is redelivered if killed).
Pools: `solo` runs tasks in the main process (GPU workers: one model in memory),
`threads` for I/O-bound audits, `prefork` for isolated CPU tasks.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from celery.signals import beat_embedded_init

from omniopd.config import OmniConfig
from workers.app import make_celery
from workers.broker import broker_for
from workers.store import wait_for_run

Pool = Literal["solo", "threads", "prefork"]


@beat_embedded_init.connect
def _beat_dies_with_its_worker(**_: object) -> None:
    """The beat embedded in a worker (`beat=True`) runs in a child process of it. A worker
    killed with SIGKILL cannot stop it, and the orphaned beat went on scheduling sweeps beside
    the restarted worker's own beat (the chaos run found one): the kernel now ends it with
    its worker (PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() == 1:  # the worker died before prctl took effect
        os._exit(0)


def run_worker(
    config: OmniConfig,
    *,
    queues: Sequence[str],
    pool: Pool = "prefork",
    concurrency: int = 1,
    beat: bool = False,
    role: str = "worker",
    config_path: str | Path | None = None,
    loglevel: str = "INFO",
    extra_task_modules: Sequence[str] = (),
    wait_for_run_s: float | None = None,
    before_consuming: Callable[[], None] | None = None,
) -> int:
    """Run a worker consuming `queues` until it is told to stop; returns its exit code.

    `wait_for_run_s`: first wait up to this long for the config's run to exist in the store,
    then refuse (RunNotFound, saying what to check); None: no check. `before_consuming`:
    called once the run exists and before the first message is taken (a rollout worker
    builds its engine there, so a slow engine start holds no batch)."""
    from db.store import open_store

    if pool not in ("solo", "threads", "prefork"):
        raise ValueError(f"pool {pool!r}: expected solo, threads or prefork")
    if not queues:
        raise ValueError("a worker needs at least one queue")
    store = open_store(config, config_path, pool_size=1)  # SchemaNotCurrent says what to run
    logging.basicConfig(level=loglevel, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the schema check's context chatter
    say = logging.getLogger("omniopd.worker")
    try:
        if wait_for_run_s is not None:
            wait_for_run(store.sessions, config.run.name, timeout_s=wait_for_run_s, log=say)
    finally:
        store.dispose()
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    say.info("%s worker: queues %s, CUDA_VISIBLE_DEVICES=%s", role, ",".join(queues),
             "(unset)" if devices is None else devices)
    if before_consuming is not None:
        before_consuming()
    with broker_for(config) as endpoint:
        app = make_celery(config, broker_url=endpoint.url, config_path=config_path, extra_task_modules=extra_task_modules)
        Path(config.run.output_dir).mkdir(parents=True, exist_ok=True)
        worker = app.Worker(
            hostname=f"{role}-{os.getpid()}@{socket.gethostname()}",
            queues=list(queues),
            pool_cls=pool,
            concurrency=concurrency,
            beat=beat,
            loglevel=loglevel,
            without_mingle=True,  # no start-up chatter between workers: ids in, store out
            without_gossip=True,
        )
        worker.start()
        return worker.exitcode or 0
