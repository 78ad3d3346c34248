"""Results tables shaped like the paper's Tables 1-2: one row per model (or method),
one column per benchmark, then Average; cells are Pass@1 in percent.

`ResultsTable` is built from `BenchmarkScore`s and rendered as Markdown (with the
bootstrap interval under each value, optional), as JSON (every number, for the store
and `omniopd eval compare`), or printed with rich.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eval.benchmarks import BENCHMARKS
from eval.passk import Estimate, average_score
from eval.results import BenchmarkScore


@dataclass(frozen=True)
class TableRow:
    """One row: label cells (e.g. student, teacher, method) and its scores by benchmark name."""

    labels: tuple[str, ...]
    scores: Mapping[str, BenchmarkScore]


@dataclass(frozen=True)
class ResultsTable:
    """Invariant: every row has len(label_headers) labels; `benchmarks` fixes column order;
    `averages[i]` is row i's mean over the benchmarks it has (None if it has none)."""

    label_headers: tuple[str, ...]
    benchmarks: tuple[str, ...]
    rows: tuple[TableRow, ...]
    averages: tuple[Estimate | None, ...]

    @property
    def titles(self) -> list[str]:
        return [BENCHMARKS[b].title if b in BENCHMARKS else b for b in self.benchmarks]


def results_table(
    rows: Sequence[TableRow],
    *,
    label_headers: Sequence[str] = ("Model",),
    benchmarks: Sequence[str] | None = None,
    seed: int = 0,
) -> ResultsTable:
    """Assemble a table; columns default to the registry order of benchmarks present."""
    for row in rows:
        if len(row.labels) != len(label_headers):
            raise ValueError(f"row {row.labels} has {len(row.labels)} labels, headers are {tuple(label_headers)}")
    present = {b for row in rows for b in row.scores}
    order = list(benchmarks) if benchmarks is not None else [b for b in BENCHMARKS if b in present]
    order += sorted(present - set(order)) if benchmarks is None else []
    averages = tuple(
        average_score([row.scores[b] for b in order if b in row.scores], seed=seed)
        if any(b in row.scores for b in order) else None
        for row in rows
    )
    return ResultsTable(tuple(label_headers), tuple(order), tuple(rows), averages)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _cell(score: BenchmarkScore | Estimate | None, with_ci: bool) -> str:
    if score is None:
        return "-"
    value = score.pass_at_1 if isinstance(score, BenchmarkScore) else score.value
    if not with_ci:
        return _pct(value)
    return f"{_pct(value)} [{_pct(score.ci_low)}, {_pct(score.ci_high)}]"


def to_markdown(table: ResultsTable, *, with_ci: bool = True) -> str:
    """A GitHub Markdown table of Pass@1 (%), with `[low, high]` intervals if `with_ci`."""
    header = [*table.label_headers, *table.titles, "Average"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < len(table.label_headers) else "---:" for i in range(len(header))) + "|"]
    for row, avg in zip(table.rows, table.averages, strict=True):
        cells = [*row.labels, *(_cell(row.scores.get(b), with_ci) for b in table.benchmarks), _cell(avg, with_ci)]
        lines.append("| " + " | ".join(cells) + " |")
    if table.rows:
        score = next(iter(table.rows[0].scores.values()), None)
        if score is not None:
            k = score.samples_per_item
            note = f"Pass@1 (%) averaged over {k} samples per item"
            lines.append("")
            lines.append(note + (f"; [{int(score.confidence * 100)}% bootstrap interval over items]." if with_ci else "."))
    return "\n".join(lines) + "\n"


def to_json(table: ResultsTable) -> dict[str, Any]:
    """Every number of the table (fractions, not percent) plus the per-item counts."""
    return {
        "label_headers": list(table.label_headers),
        "benchmarks": list(table.benchmarks),
        "rows": [
            {
                "labels": list(row.labels),
                "scores": {b: row.scores[b].to_dict() for b in table.benchmarks if b in row.scores},
                "average": None if avg is None else {"pass_at_1": avg.value, "ci_low": avg.ci_low,
                                                     "ci_high": avg.ci_high, "n_items": avg.n_items},
            }
            for row, avg in zip(table.rows, table.averages, strict=True)
        ],
    }


def print_table(table: ResultsTable, *, with_ci: bool = True, console: Any = None, title: str | None = None) -> None:
    """Print the table with rich (to stdout unless a Console is given)."""
    from rich.console import Console
    from rich.table import Table

    out = Table(title=title or "Pass@1 (%)")
    for h in table.label_headers:
        out.add_column(h)
    for t in [*table.titles, "Average"]:
        out.add_column(t, justify="right")
    for row, avg in zip(table.rows, table.averages, strict=True):
        out.add_row(*row.labels, *(_cell(row.scores.get(b), with_ci) for b in table.benchmarks), _cell(avg, with_ci))
    (console or Console()).print(out)
