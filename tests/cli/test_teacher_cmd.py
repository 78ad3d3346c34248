"""`omniopd teacher check|emulate` through the real console entry point."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import yaml

from omniopd.teachers.emulator import EmulatorConfig, EmulatorThread, scripted

KEY_ENV = "OMNIOPD_TEST_TEACHER_KEY"


def omniopd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omniopd", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.getcwd(), **(env or {})},
    )


def write_config(tmp_path, teachers: dict) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"teachers": teachers}))
    return str(path)


def test_check_reports_mode_usage_cost_and_context_for_each_teacher(tmp_path):
    claude = EmulatorConfig(provider="anthropic", faults={"reject_prefill": True}, context_window=200000)
    with EmulatorThread(claude, scripted([" five, six"])) as a, EmulatorThread(EmulatorConfig(provider="gemini"), scripted([" five"])) as g:
        config = write_config(tmp_path, {
            "claude": {"kind": "anthropic", "model": "claude-haiku-4-5", "base_url": a.url, "api_key_env": KEY_ENV},
            "gemini": {"kind": "gemini", "model": "gemini-2.5-flash", "base_url": g.url, "api_key_env": KEY_ENV},
        })
        result = omniopd("teacher", "check", "-c", config, "--json", env={KEY_ENV: "secret-value-123456789"})
    assert result.returncode == 0, result.stdout + result.stderr
    reports = {r["teacher"]: r for r in json.loads(result.stdout)}
    assert reports["claude"]["mode_used"] == "instruction" and reports["claude"]["notes"]
    assert reports["claude"]["context_window"] == 200000
    assert reports["gemini"]["mode_used"] == "prefill" and reports["gemini"]["usage_reported"]
    assert 0 < reports["gemini"]["cost_usd"] <= reports["gemini"]["reserved_usd"]
    assert "secret-value-123456789" not in result.stdout + result.stderr


def test_check_fails_with_exit_1_and_says_what_to_fix(tmp_path):
    with EmulatorThread(EmulatorConfig(provider="openai", api_key="right-key")) as o:
        config = write_config(tmp_path, {"o": {"kind": "openai", "model": "gpt-4.1-mini", "base_url": o.url, "api_key_env": KEY_ENV}})
        result = omniopd("teacher", "check", "-c", config, "--provider", "o", env={KEY_ENV: "wrong-key-abcdefgh"})
    assert result.returncode == 1
    assert "FAILED" in result.stdout and "check the API key" in result.stdout
    assert "wrong-key-abcdefgh" not in result.stdout + result.stderr


def test_check_reports_the_sampling_and_thinking_settings_and_names_the_key_of_a_refused_one(tmp_path):
    refusing = EmulatorConfig(provider="openai", faults={"reject_temperature": True})
    with EmulatorThread(EmulatorConfig(provider="gemini"), scripted([" five"])) as g, EmulatorThread(refusing) as o:
        config = write_config(tmp_path, {
            "gem": {"kind": "gemini", "model": "gemini-3.5-flash", "base_url": g.url, "api_key_env": KEY_ENV},
            "gpt": {"kind": "openai", "model": "gpt-4.1-mini", "base_url": o.url, "api_key_env": KEY_ENV, "temperature": 0.7},
        })
        result = omniopd("teacher", "check", "-c", config, env={KEY_ENV: "secret-value-123456789"})
    assert result.returncode == 1, result.stdout + result.stderr
    text = re.sub(r"\s+", " ", result.stdout)
    assert "sampling: no temperature (1.0 is the API's default); thinking: thinkingLevel MINIMAL (API version v1beta): accepted" in text
    assert "sampling: temperature 0.7; thinking: none sent: REFUSED" in text
    assert "change teachers.gpt.temperature in the config" in text


def test_check_unknown_teacher_is_a_usage_error(tmp_path):
    config = write_config(tmp_path, {"o": {"kind": "openai", "model": "gpt-4.1-mini"}})
    result = omniopd("teacher", "check", "-c", config, "--provider", "nope")
    assert result.returncode == 2 and "not a teacher" in result.stderr


def test_emulate_serves_until_interrupted(tmp_path):
    run_config = write_config(tmp_path, {"c": {"kind": "anthropic", "model": "claude-haiku-4-5", "rate_limits": {"requests_per_min": 1}}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniopd", "teacher", "emulate", "--provider", "anthropic", "--port", "0", "--config", run_config, "--seed", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}).encode()
        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01", "content-type": "application/json"}
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/messages", body, headers)) as resp:
            assert json.loads(resp.read())["usage"]["output_tokens"] == 3
            assert resp.headers["anthropic-ratelimit-requests-limit"] == "1"  # taken from the run config
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, 130, -signal.SIGINT)


def test_check_of_an_unreachable_teacher_names_the_cause(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fast = {"max_retries": 1, "backoff_base_s": 0.01, "backoff_max_s": 0.02}
    config = write_config(tmp_path, {
        name: {"kind": "openai", "model": "gpt-4.1-mini", "base_url": url, "api_key_env": KEY_ENV, "rate_limits": fast}
        for name, url in (("refused", f"http://127.0.0.1:{port}/v1"), ("dns", "http://no-such-host.invalid/v1"))
    })
    result = omniopd("teacher", "check", "-c", config, env={KEY_ENV: "secret-value-123456789"})
    assert result.returncode == 1, result.stdout + result.stderr
    out = " ".join(result.stdout.split())  # the console wraps long lines
    assert f"last attempt: connection: connection refused by 127.0.0.1:{port}" in out
    assert "last attempt: connection: DNS lookup of no-such-host.invalid failed" in out
    assert "None" not in out and "$0.000000" in out  # nothing was sent, nothing charged
