"""The sweep: every cell of the grid, resumable cell by cell, failures kept with their reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omniopd.study.sweep import (
    CellResult,
    Metric,
    cell_id,
    cells,
    parse_grid,
    plot_sweep,
    results_table,
    run_sweep,
)


class RecordingRunner:
    """A cell runner with the real interface: its metric is a function of the cell's settings;
    cells listed in `fail_on` raise, as a run that crashes would."""

    kind = "test"
    columns = (("score", 1, 2),)

    def __init__(self, fail_on: set[str] = frozenset()):
        self.settings = {"chunks": 10}
        self.fail_on = fail_on
        self.ran: list[dict[str, str]] = []

    def run(self, overrides: dict[str, str], cell_dir: Path) -> CellResult:
        self.ran.append(dict(overrides))
        if overrides["estimator.phi"] in self.fail_on:
            raise RuntimeError(f"teacher budget exhausted in cell {overrides}")
        m = int(overrides["chunking.m"])
        return CellResult({"score": Metric(m / 10, m / 10 - 0.05, m / 10 + 0.05)}, spend_usd=0.01 * m)


def test_grid_parsing_and_bad_grids():
    assert parse_grid(["chunking.m=1,3", "estimator.phi=edit,exact"]) == {"chunking.m": ["1", "3"],
                                                                        "estimator.phi": ["edit", "exact"]}
    assert len(cells(parse_grid(["a=1,2,3", "b=x,y"]))) == 6
    for bad in (["chunking.m"], ["chunking.m="], ["=1,2"], ["a=1", "a=2"], []):
        with pytest.raises(ValueError):
            parse_grid(bad)
    assert cell_id({"a": "1", "b": "2"}) == cell_id({"b": "2", "a": "1"})


def test_a_failed_cell_is_marked_and_a_rerun_completes_only_missing_and_failed_cells(tmp_path):
    grid = parse_grid(["chunking.m=1,3", "estimator.phi=edit,exact"])
    first = RecordingRunner(fail_on={"exact"})
    states = run_sweep(grid, first, tmp_path, log=lambda m: None)
    assert [s.status for s in states] == ["done", "failed", "done", "failed"]
    assert "teacher budget exhausted" in states[1].reason
    table = results_table(grid, states, first.columns)
    assert "| 3 | edit | 0.30 [0.25, 0.35] | $0.0300 |" in table
    assert table.count("failed: RuntimeError: teacher budget exhausted") == 2

    # A cell interrupted mid-run (status running) is run again, like a failed one.
    interrupted = tmp_path / "cells" / cell_id({"chunking.m": "1", "estimator.phi": "edit"}) / "cell.json"
    state = json.loads(interrupted.read_text())
    interrupted.write_text(json.dumps({**state, "status": "running", "result": None}))

    second = RecordingRunner()
    states = run_sweep(grid, second, tmp_path, log=lambda m: None)
    assert second.ran == [{"chunking.m": "1", "estimator.phi": "edit"}, {"chunking.m": "1", "estimator.phi": "exact"},
                          {"chunking.m": "3", "estimator.phi": "exact"}]
    assert [s.status for s in states] == ["done"] * 4
    plot_sweep(states, "score", tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert run_sweep(grid, third := RecordingRunner(), tmp_path, log=lambda m: None) and third.ran == []


def test_a_rerun_with_other_fixed_settings_into_the_same_directory_is_refused(tmp_path):
    grid = parse_grid(["chunking.m=1", "estimator.phi=edit"])
    run_sweep(grid, RecordingRunner(), tmp_path, log=lambda m: None)
    other = RecordingRunner()
    other.settings = {"chunks": 20}
    with pytest.raises(ValueError, match="holds a sweep with other settings"):
        run_sweep(grid, other, tmp_path, log=lambda m: None)
    grown = parse_grid(["chunking.m=1,2", "estimator.phi=edit"])  # a grown grid completes the new cells only
    again = RecordingRunner()
    run_sweep(grown, again, tmp_path, log=lambda m: None)
    assert again.ran == [{"chunking.m": "2", "estimator.phi": "edit"}]
