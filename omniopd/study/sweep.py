"""Sensitivity sweeps (Tables 4-5 of the OmniOPD paper): a grid over config keys, one cell
per combination, each cell a run of the demo (Pass@1 before/after) or of the estimator
study (MSE and Pearson against the oracle).

Resumable cell by cell: every cell has a directory `<out>/cells/<id>/` with `cell.json`
(its overrides, status, result or failure reason, seconds). A rerun skips cells whose
status is `done` and runs the rest: never run, interrupted (`running` left behind by a
killed sweep) and `failed` ones. A cell that raises is marked `failed` with the exception's
message and the sweep goes on; the table lists it with the reason, never drops it.

A cell's id is derived from its overrides (sorted keys), so reordering the grid options
finds the same cells again; the values a sweep holds fixed (the cell kind and the runner's
`settings`: base overrides, chunks per cell, ...) are kept in `<out>/sweep.yaml`, and a rerun
with other fixed values into the same directory is refused (its cells would not match). A
grid may grow between reruns: new values are new cells. A cell runner is any `CellRunner`: `run(overrides, cell_dir)`
returning a `CellResult` (named metrics with intervals, spend, and anything else to keep).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import yaml


@dataclass(frozen=True)
class Metric:
    """A measured number with its 95% interval (None where the measurement has none)."""

    value: float
    low: float | None = None
    high: float | None = None

    def text(self, scale: float = 1.0, digits: int = 3) -> str:
        v = f"{scale * self.value:.{digits}f}"
        if self.low is None or self.high is None:
            return v
        return f"{v} [{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}]"


@dataclass
class CellResult:
    metrics: dict[str, Metric]
    spend_usd: float = 0.0
    extra: dict = field(default_factory=dict)


class CellRunner(Protocol):
    kind: str
    columns: Sequence[tuple[str, float, int]]
    """(metric name, display scale, digits) of the table's metric columns, in order."""

    def run(self, overrides: dict[str, str], cell_dir: Path) -> CellResult: ...


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """`KEY=V1,V2` options -> {key: [values]}; a key may not repeat, values may not be empty."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        parsed = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not parsed:
            raise ValueError(f"--grid {item!r}: write KEY=V1,V2,... with a dotted config key, e.g. chunking.m=1,3,5")
        if key in grid:
            raise ValueError(f"--grid {key} is given twice; list all its values in one option")
        grid[key] = parsed
    if not grid:
        raise ValueError("no --grid given: a sweep needs at least one KEY=V1,V2")
    return grid


def cells(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the grid's values, in the grid's order (the last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def cell_id(overrides: dict[str, str]) -> str:
    """A stable directory name: the overrides as `key-value` parts plus a short hash of them."""
    canonical = json.dumps(sorted(overrides.items()))
    slug = "_".join(f"{k.split('.')[-1]}-{v}" for k, v in sorted(overrides.items()))
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in slug)[:80]
    return f"{safe}_{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


@dataclass
class CellState:
    overrides: dict[str, str]
    status: str  # pending | running | done | failed
    reason: str | None = None
    seconds: float | None = None
    result: dict | None = None

    @classmethod
    def load(cls, path: Path, overrides: dict[str, str]) -> CellState:
        if not path.is_file():
            return cls(overrides, "pending")
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)  # a killed sweep never leaves half a cell.json


def run_sweep(grid: dict[str, list[str]], runner: CellRunner, out_dir: Path, *,
              log: Callable[[str], None] = print) -> list[CellState]:
    """Run every cell not yet done; returns the states of all cells in grid order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "sweep.yaml"
    fixed = {"kind": runner.kind, "settings": dict(getattr(runner, "settings", {}) or {})}
    if manifest.is_file():
        before = yaml.safe_load(manifest.read_text()) or {}
        if "settings" not in before:  # written before sweeps recorded their fixed values: adopt it
            before["settings"] = fixed["settings"]
        if {k: before.get(k) for k in fixed} != fixed:
            raise ValueError(
                f"{out_dir} holds a sweep with other settings ({ {k: before.get(k) for k in fixed} }, now {fixed}): its "
                "finished cells would not match; use another --out, or the same settings to complete it")
    manifest.write_text(yaml.safe_dump({**fixed, "grid": grid}, sort_keys=False))
    states = []
    todo = cells(grid)
    for i, overrides in enumerate(todo, start=1):
        directory = out_dir / "cells" / cell_id(overrides)
        path = directory / "cell.json"
        state = CellState.load(path, overrides)
        label = ", ".join(f"{k}={v}" for k, v in overrides.items())
        if state.status == "done":
            log(f"cell {i}/{len(todo)} ({label}): done before, kept")
            states.append(state)
            continue
        log(f"cell {i}/{len(todo)} ({label}): running" + (f" again (was {state.status})" if state.status != "pending" else ""))
        state = CellState(overrides, "running")
        state.save(path)
        started = time.monotonic()
        try:
            result = runner.run(overrides, directory)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a cell's failure is recorded with its reason; the sweep goes on
            state = CellState(overrides, "failed", f"{type(exc).__name__}: {exc}", time.monotonic() - started)
            log(f"cell {i}/{len(todo)} ({label}): FAILED: {state.reason}")
        else:
            state = CellState(overrides, "done", None, time.monotonic() - started,
                              {"metrics": {k: asdict(m) for k, m in result.metrics.items()},
                               "spend_usd": result.spend_usd, "extra": result.extra})
        state.save(path)
        states.append(state)
    return states


def results_table(grid: dict[str, list[str]], states: Sequence[CellState], columns: Sequence[tuple[str, float, int]]) -> str:
    """One Markdown row per cell: the grid's values, the runner's metrics with intervals, spend, time, status."""
    keys = list(grid)
    head = [*keys, *(name for name, _, _ in columns), "teacher spend", "time", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in states:
        metrics = (s.result or {}).get("metrics", {})
        cells_ = [s.overrides[k] for k in keys]
        for name, scale, digits in columns:
            m = metrics.get(name)
            cells_.append("-" if m is None else Metric(**m).text(scale, digits))
        spend = (s.result or {}).get("spend_usd")
        cells_ += ["-" if spend is None else f"${spend:.4f}", "-" if s.seconds is None else f"{s.seconds:.0f} s",
                   s.status if s.status != "failed" else f"failed: {s.reason}"]
        lines.append("| " + " | ".join(cells_) + " |")
    return "\n".join(lines)


def plot_sweep(states: Sequence[CellState], metric: str, path: Path, *, title: str = "") -> None:
    """The first metric of every cell with its interval, one bar per cell (failed cells are empty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["\n".join(f"{k.split('.')[-1]}={v}" for k, v in s.overrides.items()) for s in states]
    values, errors = [], [[], []]
    for s in states:
        m = (s.result or {}).get("metrics", {}).get(metric)
        v = float("nan") if m is None else m["value"]
        values.append(v)
        errors[0].append(0 if m is None or m["low"] is None else v - m["low"])
        errors[1].append(0 if m is None or m["high"] is None else m["high"] - v)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(states)), 4))
    ax.bar(range(len(states)), values, yerr=errors, capsize=3, color="#1f77b4")
    ax.set_xticks(range(len(states)), labels, fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title(title or f"sweep: {metric} per cell (95% intervals)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
