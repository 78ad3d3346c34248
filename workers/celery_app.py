"""A module-level Celery app for Celery's own tools (Flower, `celery inspect`, `celery control`).

OmniOPD builds its app from a run's config (`workers.app.make_celery`); Celery's command
line wants a module attribute instead. This module builds it from the config named by
the environment variable OMNIOPD_CONFIG:

    export OMNIOPD_CONFIG=configs/qwen3-4b_gemini-flash.yaml
    celery -A workers.celery_app inspect active_queues
    celery -A workers.celery_app control enable_events   # workers start with task events off
    celery -A workers.celery_app flower --port=5555      # pip install flower

Only a shared broker (broker.mode: redis or rabbitmq) can be watched from outside: an embedded broker
belongs to the learner's process.
"""

from __future__ import annotations

import os

from omniopd.config import load_config
from workers.app import make_celery

_path = os.environ.get("OMNIOPD_CONFIG")
if not _path:
    raise RuntimeError("set OMNIOPD_CONFIG to the run's config file (e.g. export OMNIOPD_CONFIG=configs/my-run.yaml)")
_config = load_config(_path)
if _config.broker.mode == "embedded":
    raise RuntimeError(f"{_path}: broker.mode is 'embedded'; Celery's tools need a shared broker "
                       "(broker.mode: redis with broker.url: redis://HOST:6379/0, or rabbitmq with amqp://...)")
app = make_celery(_config, broker_url=_config.broker.url, config_path=_path)
