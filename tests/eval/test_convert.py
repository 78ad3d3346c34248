"""Converters from each benchmark's public release format to our schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.convert import convert_files, convert_rows, float_tolerance
from eval.datasets import DatasetError, load_items, write_parquet
from omniopd.cli import app

DATA = Path(__file__).parent / "data"

CASES = {
    # benchmark: (public sample files, ids written, number skipped)
    "math500": (["public_math500.jsonl"], ["test/precalculus/807", "test/number_theory/515", "test/algebra/2584"], 0),
    "aime24": (["public_aime24.jsonl", "public_aimo_validation_aime.jsonl"], ["2024-I-1", "2024-II-4", "60"], 1),
    "aime25": (["public_aime25_I.jsonl", "public_aime25_II.jsonl"], ["public_aime25_I/1", "public_aime25_I/2", "public_aime25_II/1"], 0),
    "amc23": (["public_amc23.jsonl"], ["0", "1"], 1),
    "olympiadbench": (["public_olympiadbench.jsonl"], ["1606", "2498", "2233"], 2),
    "apps": (["public_apps.jsonl"], ["apps/4001", "apps/4002", "apps/4004"], 1),
    "taco": (["public_taco.jsonl"], ["public_taco/1", "public_taco/2"], 0),
    "codecontests": (["public_codecontests.jsonl"], ["1_A. Sum of Two", "2_B. Average"], 1),
    "codeforces": (["public_codeforces.jsonl"], ["1/A", "1/D"], 2),
}


@pytest.mark.parametrize("benchmark", list(CASES))
def test_public_sample_converts_to_valid_rows_of_our_schema(benchmark: str, tmp_path: Path) -> None:
    from eval.benchmarks import get_benchmark

    files, ids, n_skipped = CASES[benchmark]
    report = convert_files(benchmark, [DATA / f for f in files], tmp_path / "out.jsonl")
    assert [r["id"] for r in report.rows] == ids
    assert len(report.skipped) == n_skipped and not report.errors
    items = load_items(tmp_path / "out.jsonl", get_benchmark(benchmark).kind)
    assert [i.id for i in items] == ids


def test_math_fields_are_mapped_faithfully() -> None:
    (row, *_), = [convert_rows("math500", [DATA / "public_math500.jsonl"]).rows]
    assert row == {"id": "test/precalculus/807", "problem": row["problem"], "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
                   "source": "math500", "level": 2, "subject": "Precalculus"}
    amc = convert_rows("amc23", [DATA / "public_amc23.jsonl"]).rows
    assert [r["answer"] for r in amc] == ["27", "36"]  # released as floats 27.0, 36.0
    olymp = convert_rows("olympiadbench", [DATA / "public_olympiadbench.jsonl"]).rows
    assert [r["answer"] for r in olymp] == ["2", "2, 3", "5"]
    assert olymp[2]["problem"].startswith("Let $T$ be the answer to the previous problem.\n\n")


def test_code_tests_limits_and_tolerances_are_normalised() -> None:
    apps = {r["id"]: r for r in convert_rows("apps", [DATA / "public_apps.jsonl"]).rows}
    assert apps["apps/4002"]["tests"] == {"inputs": [[[1, 2], [3, 4]], [[], []]], "outputs": [[[4, 6]], [[]]], "fn_name": "add_lists"}
    assert apps["apps/4004"]["tests"] == {"inputs": ["4", "2"], "outputs": ["2.0", "1.4142135623"], "float_tolerance": 1e-6}
    cc = {r["id"]: r for r in convert_rows("codecontests", [DATA / "public_codecontests.jsonl"]).rows}
    assert cc["1_A. Sum of Two"]["tests"]["inputs"] == ["1 2\n", "5 5\n", "0 0\n", "7 -7\n"]  # public + private + generated
    assert cc["1_A. Sum of Two"]["time_limit_s"] == 2.5 and cc["1_A. Sum of Two"]["memory_limit_mb"] == 256
    taco = convert_rows("taco", [DATA / "public_taco.jsonl"]).rows
    assert (taco[0]["time_limit_s"], taco[0]["memory_limit_mb"]) == (1.0, 256)
    assert taco[1]["tests"]["fn_name"] == "reverse_words"
    cf = {r["id"]: r for r in convert_rows("codeforces", [DATA / "public_codeforces.jsonl"]).rows}
    assert "Input\nThe input contains three" in cf["1/A"]["problem"] and cf["1/A"]["tests"]["outputs"] == ["4\n", "1\n"]
    assert cf["1/D"]["tests"]["float_tolerance"] == 1e-6  # checker problem kept: the statement gives a tolerance


def test_skipped_rows_say_why() -> None:
    report = convert_rows("codeforces", [DATA / "public_codeforces.jsonl"])
    assert [str(s) for s in report.skipped] == [
        "public_codeforces.jsonl line 2: interactive problem",
        "public_codeforces.jsonl line 3: needs the problem's own checker (several outputs are accepted)",
    ]


def test_codecontests_parquet_with_nested_tests_converts(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (DATA / "public_codecontests.jsonl").read_text().splitlines()]
    write_parquet(tmp_path / "cc.parquet", rows)  # struct columns, as the hub releases them
    report = convert_rows("codecontests", [tmp_path / "cc.parquet"])
    assert [r["id"] for r in report.rows] == ["1_A. Sum of Two", "2_B. Average"]


def test_bad_public_rows_are_all_reported_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        convert_files("math500", [DATA / "public_bad_math500.jsonl"], tmp_path / "out.jsonl")
    assert [str(e) for e in err.value.errors] == [
        "public_bad_math500.jsonl line 2: missing field 'answer'",
        "public_bad_math500.jsonl line 3: invalid JSON: Expecting value (column 59)",
        "public_bad_math500.jsonl line 4: not a JSON object",
        "public_bad_math500.jsonl line 5: duplicate id 'test/prealgebra/1' (first at public_bad_math500.jsonl line 1)",
    ]
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("statement", "tol"),
    [("absolute or relative error does not exceed 10^{-6}.", 1e-6), ("relative error doesn't exceed $$$10^{-9}$$$", 1e-9),
     ("absolute error not greater than 1e-4", 1e-4), ("absolute or relative error does not exceed 10 - 6.", 1e-6),
     ("Print the answer modulo 10^9+7.", None)],
)
def test_float_tolerance_is_read_from_the_statement(statement: str, tol: float | None) -> None:
    assert float_tolerance(statement) == tol


def test_cli_converts_and_reports_skips(tmp_path: Path) -> None:
    out = tmp_path / "apps.jsonl"
    result = CliRunner().invoke(app, ["data", "convert", "apps", str(DATA / "public_apps.jsonl"), str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 apps rows" in result.output and "no tests released" in result.output
    bad = CliRunner().invoke(app, ["data", "convert", "math500", str(DATA / "public_bad_math500.jsonl"), str(tmp_path / "m.jsonl")])
    assert bad.exit_code == 2 and "line 2: missing field 'answer'" in bad.output
    unknown = CliRunner().invoke(app, ["data", "convert", "gsm8k", "a.jsonl", "b.jsonl"])
    assert unknown.exit_code == 2 and "no converter for 'gsm8k'" in unknown.output
