"""`omniopd worker audit` refuses to start without what it needs, saying what to fix."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from omniopd.cli import app


def _config(tmp_path, **teacher) -> str:
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "run": {"name": "c", "output_dir": str(tmp_path / "out")},
        "teachers": {"claude": {"kind": "anthropic", "model": "claude-haiku-4-5", "api_key_env": "OMNIOPD_TEST_UNSET_KEY", **teacher}},
        "audit": {"teacher": "claude"},
    }))
    return str(path)


def test_audit_worker_refuses_to_start_without_the_api_key_or_a_price(tmp_path, monkeypatch):
    monkeypatch.delenv("OMNIOPD_TEST_UNSET_KEY", raising=False)
    result = CliRunner().invoke(app, ["worker", "audit", "--config", _config(tmp_path)])
    assert result.exit_code == 2 and "OMNIOPD_TEST_UNSET_KEY" in result.output
    monkeypatch.setenv("OMNIOPD_TEST_UNSET_KEY", "sk-test-0123456789abcdef")
    result = CliRunner().invoke(app, ["worker", "audit", "--config", _config(tmp_path, model="no-such-model")])
    assert result.exit_code == 2 and "no price for model 'no-such-model'" in result.output


def test_audit_worker_names_the_configured_teachers_for_an_unknown_one(tmp_path):
    result = CliRunner().invoke(app, ["worker", "audit", "--config", _config(tmp_path), "--teacher", "gpt"])
    assert result.exit_code == 2 and "--teacher 'gpt' is not a key of `teachers` (claude)" in result.output


def test_audit_worker_warns_that_it_will_idle_when_the_objective_declares_no_audits(tmp_path, monkeypatch):
    import yaml

    monkeypatch.delenv("OMNIOPD_TEST_UNSET_KEY", raising=False)
    path = Path(_config(tmp_path))
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, "loss": {"method": "opd_whitebox", "whitebox_teacher": "/m"}}))
    result = CliRunner().invoke(app, ["worker", "audit", "--config", str(path)])
    assert result.exit_code == 2 and "declares no audits" in result.output  # then stops: no API key
    result = CliRunner().invoke(app, ["worker", "audit", "--config", _config(tmp_path)])
    assert "declares no audits" not in result.output
