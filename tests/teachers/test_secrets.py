"""A sentinel API key set in the environment appears in no exception, log record,
attempt record, repr or status output — even when the provider echoes it back."""

from __future__ import annotations

import json
import logging
import pickle
import uuid

import pytest

from omniopd.config import TeacherConfig
from omniopd.teachers.build import build_teacher
from omniopd.teachers.check import check_teacher
from omniopd.teachers.emulator import scripted
from omniopd.teachers.types import ApiKey, FatalProviderError, TeacherError
from tests.teachers.conftest import run

ENV = "OMNIOPD_TEST_SENTINEL_KEY"


@pytest.fixture
def sentinel(monkeypatch):
    key = f"sk-SENTINEL-{uuid.uuid4().hex}"
    monkeypatch.setenv(ENV, key)
    return key


def assert_clean(text: str, key: str) -> None:
    assert key not in text
    assert key[-8:] not in text  # providers echo fragments ("sk-...wxyz")


def teacher(kind: str, url: str, **extra) -> TeacherConfig:
    mode = {"openai_compat": "prefill"}.get(kind)
    return TeacherConfig(kind=kind, model="claude-haiku-4-5" if kind == "anthropic" else "gpt-4.1-mini", base_url=url, api_key_env=ENV, continuation=mode, timeout_s=0.5, **extra)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_rejected_key_echoed_by_the_provider_never_leaks(emulator, sentinel, caplog, kind):
    emu = emulator(kind, api_key="the-right-key")
    client = build_teacher(teacher(kind, emu.url))
    caplog.set_level(logging.DEBUG)

    async def go():
        async with client:
            return await client.continue_prefix("P", "x", 2, 8)

    with pytest.raises(FatalProviderError) as err:
        run(go())
    texts = [str(err.value), repr(err.value), repr(err.value.partial), repr(client), str(client.api_key)]
    texts += [repr(a) for a in err.value.partial.attempts]
    texts += [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]
    for text in texts:
        assert_clean(text, sentinel)
    if kind == "openai":  # the emulator echoes the key like OpenAI's 401 does: scrubbed
        assert "Incorrect API key provided: ***" in str(err.value)


def test_faults_logs_and_records_never_hold_the_key(emulator, sentinel, caplog):
    faults = {"script": ["429", "500", "malformed", "timeout", "empty"], "hang_s": 30}
    emu = emulator("anthropic", generator=scripted(["ok"]), faults=faults)
    cfg = teacher("anthropic", emu.url, rate_limits={"backoff_base_s": 0.01, "backoff_max_s": 0.02})
    client = build_teacher(cfg)
    caplog.set_level(logging.DEBUG)

    async def go():
        async with client:
            return await client.continue_prefix("P", "x", 3, 8)

    result = run(go())
    assert len(result.texts) == 3
    for text in [repr(result), *(repr(a) for a in result.attempts), *(r.getMessage() for r in caplog.records)]:
        assert_clean(text, sentinel)
    assert caplog.records  # the attempts were logged, so the check above looked at something


def test_check_report_holds_no_key(emulator, sentinel, tmp_path):
    emu = emulator("openai", generator=scripted(["five"]))
    report = run(check_teacher("t", teacher("openai", emu.url), prices_file="configs/prices.yaml"))
    assert report.ok, report.problems
    assert_clean(json.dumps(report.as_dict()), sentinel)


def test_api_key_object_hides_itself_and_refuses_pickling(sentinel):
    key = ApiKey.from_env(ENV)
    assert_clean(repr(key) + str(key) + f"{key}", sentinel)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    assert key.reveal() == sentinel


def test_missing_key_error_names_the_variable_not_a_value(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(TeacherError, match=ENV):
        build_teacher(TeacherConfig(kind="anthropic", model="m", api_key_env=ENV))
