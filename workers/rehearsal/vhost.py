"""A throwaway RabbitMQ vhost: each run on a RabbitMQ broker gets its own (queue names are
the same in every run, so two runs in one vhost would take each other's messages).

Created and deleted with `rabbitmqctl` (on the broker's host, as a user allowed to run it:
root or the rabbitmq user). Without it, name an existing vhost in the URL yourself.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

from omniopd.config import redact_url


def _ctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        raise RuntimeError("rabbitmqctl is not on PATH: create a vhost for the run yourself "
                           "(rabbitmqctl add_vhost NAME on the broker's host) and put it in the broker URL")
    done = subprocess.run([exe, "-q", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}")


def with_vhost(url: str, vhost: str) -> str:
    """`url` (amqp://user:pass@host:port[/anything]) pointing at `vhost`."""
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(vhost, safe="")))


@contextlib.contextmanager
def temporary_vhost(url: str, prefix: str = "omniopd") -> Iterator[str]:
    """A new vhost on the broker of `url`, its user given every permission on it; yields the
    URL that points at it and deletes the vhost (and its queues) afterwards."""
    user = urlsplit(url).username or "guest"
    vhost = f"{prefix}-{uuid.uuid4().hex[:10]}"
    _ctl("add_vhost", vhost)
    try:
        _ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield with_vhost(url, vhost)
    finally:
        try:
            _ctl("delete_vhost", vhost)
        except RuntimeError as exc:  # the run's result stands; say what is left behind
            print(f"could not delete RabbitMQ vhost {vhost} on {redact_url(url)}: {exc}")
