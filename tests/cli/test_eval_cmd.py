"""`omniopd eval` argument handling through the real CLI app (no generation here; the
end-to-end runs are in tests/eval/test_evaluate.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from omniopd.cli import app


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(f"run: {{name: cli, output_dir: {tmp_path / 'out'}}}\neval: {{data_dir: {tmp_path}}}\n")
    return path


def omniopd(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_eval_and_compare_are_registered_with_help() -> None:
    result = omniopd("eval", "--help")
    assert result.exit_code == 0 and "compare" in result.output and "--endpoint" in result.output
    assert omniopd("eval", "compare", "--help").exit_code == 0


@pytest.mark.parametrize(("args", "message"), [
    ((), "--config is required"),
    (("-c", "{config}", "--model", "m", "--endpoint", "http://x"), "either a model or an endpoint"),
    (("-c", "{config}"), "nothing to evaluate"),
    (("-c", "{config}", "--model", "m", "--step", "3"), "--step needs --run"),
    (("-c", "{config}", "--model", "m", "--labels", "no-equals"), "Header=value"),
    (("-c", "{config}", "--model", "m", "--endpoint-api", "grpc"), "--endpoint-api must be one of chat, completions"),
])  # fmt: skip
def test_usage_errors_say_what_to_fix(config: Path, args: tuple[str, ...], message: str) -> None:
    result = omniopd("eval", *(a.format(config=config) for a in args))
    assert result.exit_code == 2 and message in result.output


def test_a_store_without_the_schema_names_the_upgrade_command(config: Path) -> None:
    result = omniopd("eval", "-c", config, "--model", "m", "-b", "math500")
    assert result.exit_code == 2 and f"omniopd db upgrade --config {config}" in result.output


def test_an_unknown_benchmark_is_refused_with_the_known_ones(config: Path) -> None:
    assert omniopd("db", "upgrade", "-c", config).exit_code == 0
    result = omniopd("eval", "-c", config, "--model", "m", "-b", "math501")
    assert result.exit_code == 2 and "unknown benchmark 'math501'" in result.output and "math500" in result.output


def test_compare_of_a_name_that_is_no_file_needs_the_config() -> None:
    result = omniopd("eval", "compare", "tag-a", "tag-b")
    assert result.exit_code == 2 and "give --config to look it up in the store" in result.output


@pytest.mark.parametrize("script", ["eval_math.sh", "eval_code.sh"])
def test_eval_scripts_print_their_documented_arguments_when_called_without(script: str) -> None:
    import subprocess

    root = Path(__file__).parents[2]
    proc = subprocess.run([str(root / "scripts" / script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "CONFIG" in proc.stdout and "MODEL_OR_URL" in proc.stdout and "BENCHMARKS" in proc.stdout
