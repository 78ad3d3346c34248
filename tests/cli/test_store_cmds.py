"""`omniopd db`, `omniopd data import` and `omniopd status` through the real CLI app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db.migrate import head_revision
from omniopd.cli import app


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(
        f"run: {{name: cli, output_dir: {tmp_path / 'out'}}}\n"
        "teachers: {emu: {kind: anthropic, model: m, budget_usd: 2.5}}\n"
        "audit: {teacher: emu, budget_usd: 4}\n"
    )
    return path


def omniopd(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_db_current_names_the_upgrade_command_until_upgraded(config):
    before = omniopd("db", "current", "--config", config)
    assert before.exit_code == 1
    assert f"omniopd db upgrade --config {config}" in before.output
    up = omniopd("db", "upgrade", "--config", config)
    assert up.exit_code == 0, up.output
    assert f"empty -> {head_revision()}" in up.output
    assert omniopd("db", "upgrade", "--config", config).exit_code == 0  # idempotent
    now = omniopd("db", "current", "--config", config)
    assert now.exit_code == 0 and "(current)" in now.output


def test_commands_refuse_a_store_that_is_behind_with_the_fix(config, tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text('{"id": 1, "prompt": "q", "answer": "a"}\n')
    result = omniopd("data", "import", "--config", config, problems)
    assert result.exit_code == 2
    assert f"run: omniopd db upgrade --config {config}" in result.output


def test_import_reports_each_bad_line_and_imports_good_rows_once(config, tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text(
        '{"id": "a", "prompt": "1+1?", "answer": 2}\n'
        '{"id": "b", "prompt": "no reference"}\n'
        "{not json\n"
        "\n"
        '{"id": "c", "prompt": "code", "tests": [{"input": "1", "output": "2"}]}\n'
        '["a", "list"]\n'
        '{"id": "d", "prompt": ""}\n'
    )
    assert omniopd("db", "upgrade", "--config", config).exit_code == 0
    first = omniopd("data", "import", "--config", config, problems)
    assert first.exit_code == 1
    for line, reason in [(2, "needs 'answer'"), (3, "not valid JSON"), (6, "expected a JSON object"), (7, "'prompt'")]:
        assert f"line {line}: {reason}" in first.output
    assert "2 new problems, 0 already in the store, 4 bad rows" in first.output
    again = omniopd("data", "import", "--config", config, problems, "--json")
    report = json.loads(again.output)
    assert (report["inserted"], report["already_present"], len(report["errors"])) == (0, 2, 4)


def test_strict_import_imports_nothing_when_a_row_is_bad(config, tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text('{"id": "a", "prompt": "q", "answer": "1"}\n{"id": "b"}\n')
    assert omniopd("db", "upgrade", "--config", config).exit_code == 0
    result = omniopd("data", "import", "--config", config, problems, "--strict")
    assert result.exit_code == 1
    assert "0 new problems" in result.output and "nothing imported" in result.output


def test_status_json_shows_states_budgets_and_why_queues_are_unavailable(config):
    from db.store import open_store
    from omniopd.config import load_config
    from workers.store import ensure_run

    assert omniopd("db", "upgrade", "--config", config).exit_code == 0
    cfg = load_config(config)
    with open_store(cfg) as store, store.sessions.begin() as s:
        ensure_run(s, cfg)
    result = omniopd("status", "--config", config, "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["trajectories"] == {"generated": 0, "auditing": 0, "ready": 0, "consumed": 0, "dropped": 0}
    assert {b["provider"]: b["cap"] for b in status["budgets"]} == {"emu": 2_500_000, "*": 4_000_000}
    assert "no embedded broker is running" in status["broker"]["error"]
    table = omniopd("status", "--config", config)
    assert "run total" in table.output and "$2.5000" in table.output


def test_status_of_an_unknown_run_lists_the_runs(config):
    assert omniopd("db", "upgrade", "--config", config).exit_code == 0
    result = omniopd("status", "--config", config, "--run", "nope")
    assert result.exit_code == 2
    assert "no run named 'nope'" in result.output


@pytest.mark.parametrize("url,says", [
    ("foo", "store URL 'foo' is not a database URL; write sqlite:///path/omniopd.db or postgresql+psycopg://"),
    ("postgresql+asyncpg://u@h/db", "the postgresql+asyncpg driver is not supported"),
    ("mysql://u@h/db", "only SQLite and PostgreSQL are supported"),
])
def test_status_and_spend_with_an_unsupported_store_url_say_what_is_supported(config, url, says):
    for command in ("status", "spend"):
        result = CliRunner().invoke(app, [command, "--config", str(config), "--set", f"store.url={url}"])
        assert result.exit_code != 0 and isinstance(result.exception, SystemExit)  # a message, no traceback
        assert says in " ".join(result.output.split()) and "Traceback" not in result.output


def test_a_reader_never_creates_a_sqlite_store_or_its_directory(config, tmp_path):
    missing = tmp_path / "typo" / "deeper" / "omniopd.db"
    for command in ("status", "spend"):
        result = omniopd(command, "--config", config, "--set", f"store.url=sqlite:///{missing}")
        assert result.exit_code != 0 and f"no store at {missing}" in " ".join(result.output.split())
    assert not (tmp_path / "typo").exists()
