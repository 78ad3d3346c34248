"""Results tables shaped like the paper's Tables 1-2 (Markdown, JSON, rich)."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from eval.passk import score_benchmark
from eval.results import SampleResult
from eval.tables import TableRow, print_table, results_table, to_json, to_markdown


def score(benchmark: str, rates: list[int], k: int = 4):
    samples = [SampleResult(benchmark, f"i{j}", s, None, "", None, s < c, "x", 0.0)
               for j, c in enumerate(rates) for s in range(k)]
    return score_benchmark(benchmark, samples)


@pytest.fixture
def table():
    base = {"math500": score("math500", [4, 2, 0, 4]), "aime24": score("aime24", [1, 0])}
    tuned = {"math500": score("math500", [4, 4, 2, 4]), "aime24": score("aime24", [4, 0]), "amc23": score("amc23", [2])}
    return results_table([TableRow(("Qwen3-4B", "-", "Base"), base), TableRow(("Qwen3-4B", "Qwen3-32B", "OmniOPD"), tuned)],
                         label_headers=("Student", "Teacher", "Method"))


def test_columns_follow_the_papers_order_then_average(table) -> None:
    assert table.titles == ["MATH-500", "AIME-24", "AMC-23"]
    md = to_markdown(table, with_ci=False).splitlines()
    assert md[0] == "| Student | Teacher | Method | MATH-500 | AIME-24 | AMC-23 | Average |"
    assert md[2] == "| Qwen3-4B | - | Base | 62.50 | 12.50 | - | 37.50 |"
    assert md[3] == "| Qwen3-4B | Qwen3-32B | OmniOPD | 87.50 | 50.00 | 50.00 | 62.50 |"
    assert "averaged over 4 samples" in md[-1]


def test_markdown_shows_intervals_and_json_keeps_every_number(table) -> None:
    md = to_markdown(table)
    assert "62.50 [" in md and "95% bootstrap interval over items" in md
    data = json.loads(json.dumps(to_json(table)))
    row = data["rows"][1]
    assert row["labels"] == ["Qwen3-4B", "Qwen3-32B", "OmniOPD"]
    assert row["scores"]["math500"]["pass_at_1"] == pytest.approx(0.875)
    assert row["scores"]["math500"]["items"][2] == {"item_id": "i2", "n": 4, "c": 2}
    assert row["average"]["pass_at_1"] == pytest.approx((0.875 + 0.5 + 0.5) / 3)


def test_rich_table_prints(table) -> None:
    buf = io.StringIO()
    print_table(table, console=Console(file=buf, width=200), with_ci=False)
    assert "OmniOPD" in buf.getvalue() and "87.50" in buf.getvalue()


def test_rows_must_match_the_label_headers() -> None:
    with pytest.raises(ValueError, match="labels"):
        results_table([TableRow(("a", "b"), {})], label_headers=("Model",))
