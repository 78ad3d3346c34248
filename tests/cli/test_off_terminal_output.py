"""Off a terminal (a file, a pipe, a CI log) `omniopd spend` and `status` print their tables
at full width: rich would otherwise cut them to 80 columns ("ca…", "em…")."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from rich.table import Table

from omniopd.cli.common import OFF_TERMINAL_WIDTH, ReportConsole
from tests.dashboard.fill import fill_run
from tests.workers.conftest import ROOT

HEADERS = [f"a rather long column header {k}" for k in range(8)]


def test_a_table_off_a_terminal_keeps_every_cell_whole(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    console = ReportConsole(file=out)
    assert not console.is_terminal and console.width == OFF_TERMINAL_WIDTH
    table = Table(title="wide")
    for header in HEADERS:
        table.add_column(header)
    table.add_row(*(f"value number {k} of the row" for k in range(8)))
    console.print(table)
    console.rule("end")
    text = out.getvalue()
    assert "…" not in text
    assert all(h in text for h in HEADERS) and "value number 7 of the row" in text
    assert max(len(line) for line in text.splitlines()) < 400  # as wide as the table, not padded to 1000
    assert len(text.splitlines()[-1]) == 80  # a rule stays a rule's width


def test_columns_set_by_the_user_still_win(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert ReportConsole(file=io.StringIO()).width == 100


def test_spend_and_status_written_to_a_pipe_are_not_cut(tmp_path):
    filled = fill_run(f"sqlite:///{tmp_path / 'run' / 'omniopd.db'}", tmp_path / "run", name="r1")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = str(ROOT)
    for command in ("spend", "status"):
        result = subprocess.run([sys.executable, "-m", "omniopd", command, "-c", str(filled.config_path)], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "…" not in result.stdout, result.stdout
    assert "cache write" in result.stdout or "headroom" in result.stdout
