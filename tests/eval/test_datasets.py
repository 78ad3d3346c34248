"""Our schema: loading JSONL and Parquet, every bad row reported with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.benchmarks import get_benchmark
from eval.datasets import (
    CodeItem,
    DatasetError,
    MathItem,
    load_items,
    subsample,
    write_jsonl,
    write_parquet,
)

DATA = Path(__file__).parent / "data"


def test_math_code_and_demo_files_load_into_typed_items() -> None:
    math = load_items(DATA / "ours_math.jsonl", "math")
    assert math[0] == MathItem("m1", "What is $1+1$?", "2", source="tiny", level=1, subject="Arithmetic")
    demo = load_items(DATA / "ours_demo.jsonl", "demo")
    assert demo[0].problem == "2 + 3 =" and demo[0].answer == "5"
    code = load_items(DATA / "ours_code.jsonl", "code")
    assert isinstance(code[0], CodeItem) and code[0].tests.inputs == ("1 2\n",) and code[0].time_limit_s == 2.0
    assert code[1].tests.fn_name == "total" and code[1].tests.inputs == ([[1, 2, 3]],)
    assert code[2].tests.float_tolerance == 1e-6


def test_every_bad_row_is_reported_with_its_line_number() -> None:
    with pytest.raises(DatasetError) as err:
        load_items(DATA / "ours_bad_code.jsonl", "code")
    lines = [str(e) for e in err.value.errors]
    assert lines == [
        "line 2: tests has 2 inputs but 1 outputs",
        "line 3: tests is empty: a problem needs at least one test",
        "line 4: stdin tests must be strings (test 0 is not); call-based tests need tests.fn_name",
        "line 5: duplicate id 'c1' (first at line 1)",
        "line 6: field 'time_limit_s' must be a positive number, got -1",
        "line 7: missing field 'problem'",
        "line 9: invalid JSON: Expecting property name enclosed in double quotes (column 2)",
    ]
    assert "omniopd data convert" in str(err.value)  # a public-format file gets the fix


def test_parquet_round_trip_keeps_items_including_mixed_type_tests(tmp_path: Path) -> None:
    for name, kind in (("ours_code.jsonl", "code"), ("ours_math.jsonl", "math")):
        items = load_items(DATA / name, kind)
        rows = [i.to_dict() if isinstance(i, CodeItem) else {k: v for k, v in vars(i).items() if v is not None} for i in items]
        write_parquet(tmp_path / "x.parquet", rows)
        assert load_items(tmp_path / "x.parquet", kind) == items
        write_jsonl(tmp_path / "x.jsonl", rows)
        assert load_items(tmp_path / "x.jsonl", kind) == items


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    write_parquet(tmp_path / "bad.parquet", [{"id": "a", "problem": "p", "answer": "1"}, {"id": "b", "problem": "p", "answer": ""}])
    with pytest.raises(DatasetError, match="row 2: field 'answer' is empty"):
        load_items(tmp_path / "bad.parquet", "math")


def test_subsample_is_seeded_and_keeps_file_order() -> None:
    items = [MathItem(str(i), "p", "1") for i in range(50)]
    a, b = subsample(items, 10, seed=3), subsample(items, 10, seed=3)
    assert a == b and len(a) == 10
    assert [int(i.id) for i in a] == sorted(int(i.id) for i in a)
    assert subsample(items, None) == items and subsample(items, 99) == items


def test_benchmark_finds_its_file_or_says_how_to_make_it(tmp_path: Path) -> None:
    bench = get_benchmark("math500")
    with pytest.raises(FileNotFoundError, match="omniopd data convert math500"):
        bench.load(tmp_path)
    (tmp_path / "math500.jsonl").write_text((DATA / "ours_math.jsonl").read_text())
    assert [i.id for i in bench.load(tmp_path, max_items=2, seed=0)] in (["m1", "m2"], ["m1", "m3"], ["m2", "m3"])
