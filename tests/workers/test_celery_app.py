"""workers.celery_app: the module Celery's tools (Flower, inspect) load, built from OMNIOPD_CONFIG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = "from workers.celery_app import app; print(app.conf.broker_url); print(sorted(app.conf.task_routes))"


def _run(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OMNIOPD_CONFIG"}
    return subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT), **env_extra},
                          capture_output=True, text=True, timeout=60)


def test_the_app_follows_the_config_and_explains_what_is_missing(tmp_path):
    shared = tmp_path / "shared.yaml"
    shared.write_text("broker: {mode: redis, url: 'redis://127.0.0.1:6399/3'}\n"
                      "teachers: {t: {kind: gemini, model: gemini-2.5-flash}}\naudit: {teacher: t}\n")
    ok = _run({"OMNIOPD_CONFIG": str(shared)})
    assert ok.returncode == 0, ok.stderr
    assert "redis://127.0.0.1:6399/3" in ok.stdout and "omniopd.audit.trajectory" in ok.stdout

    missing = _run({})
    assert missing.returncode != 0 and "set OMNIOPD_CONFIG" in missing.stderr
    embedded = tmp_path / "embedded.yaml"
    embedded.write_text("broker: {mode: embedded}\n")
    refused = _run({"OMNIOPD_CONFIG": str(embedded)})
    assert refused.returncode != 0 and "need a shared broker" in refused.stderr
