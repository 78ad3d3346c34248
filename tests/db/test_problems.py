"""Problem files: every bad row named, good rows imported exactly once."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from db.models import Problem
from db.problem_files import read_problem_file
from db.repo_problems import get_problems, import_problems, problem_ids


def write_jsonl(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_jsonl_with_malformed_rows_names_each_bad_line(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "ok1", "prompt": "2+2?", "answer": 4, "level": 3},
        "{broken",
        {"prompt": "no id", "answer": "1"},
        {"id": "x", "prompt": "no reference"},
        {"id": "t", "prompt": "code", "tests": [{"input": "1"}]},
        {"id": True, "prompt": "bool id", "answer": "1"},
        {"id": "ok1", "prompt": "changed!", "answer": 4},
        {"id": "ok2", "prompt": "code", "tests": [{"input": "1\n", "output": "2\n"}], "split": "test"},
        {"id": "ok1", "prompt": "2+2?", "answer": 4, "level": 3},
    ])
    parsed = read_problem_file(path)
    errors = {e.where: e.reason for e in parsed.errors}
    assert errors == {
        "line 2": errors["line 2"],
        "line 3": "missing 'id'",
        "line 4": "needs 'answer' (math) or 'tests' (code)",
        "line 5": "'tests'[0] must be an object with exactly 'input' and 'output'",
        "line 6": "'id' must be a string, got bool",
        "line 7": "id 'ok1' is already used by line 1 with different content",
    }
    assert errors["line 2"].startswith("not valid JSON")
    assert [str(r) for r in parsed.repeats] == ["line 9: repeats line 1 (id 'ok1'); imported once"]
    rows = {r.uid: r for r in parsed.rows}
    assert set(rows) == {"ok1", "ok2"}
    assert rows["ok1"].answer == "4" and rows["ok1"].meta == {"level": 3} and rows["ok1"].split == "train"
    assert rows["ok2"].split == "test" and rows["ok2"].tests == [{"input": "1\n", "output": "2\n"}]


def test_good_rows_are_imported_once_when_the_import_is_repeated(sessions, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": k, "prompt": f"q{k}", "answer": k} for k in range(5)] + ["oops"])
    for attempt in range(3):
        parsed = read_problem_file(path)
        assert len(parsed.errors) == 1
        with sessions.begin() as s:
            result = import_problems(s, rows=parsed.rows)
        assert (result.inserted, result.already_present) == ((5, 0) if attempt == 0 else (0, 5))
    with sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(Problem)) == 5
        ids = problem_ids(s, split="train")
        assert [p.uid for p in get_problems(s, ids=ids)] == ["0", "1", "2", "3", "4"]


def test_changed_content_under_a_stored_id_is_a_conflict_not_an_overwrite(sessions, tmp_path):
    with sessions.begin() as s:
        import_problems(s, rows=read_problem_file(write_jsonl(tmp_path / "a.jsonl", [{"id": "p", "prompt": "old", "answer": "1"}])).rows)
    changed = read_problem_file(write_jsonl(tmp_path / "b.jsonl", [{"id": "p", "prompt": "new", "answer": "1"}]))
    with sessions.begin() as s:
        result = import_problems(s, rows=changed.rows)
        assert result.inserted == 0
        assert [str(c) for c in result.conflicts] == [
            "line 1: id 'p' is already in the store with different content; give the changed problem a new id"
        ]
        assert s.scalar(select(Problem.prompt)) == "old"


def test_parquet_rows_are_validated_with_row_numbers(tmp_path):
    table = pa.table({"id": ["a", "b", None], "prompt": ["q", "", "q"], "answer": ["1", "2", "3"]})
    pq.write_table(table, tmp_path / "p.parquet")
    parsed = read_problem_file(tmp_path / "p.parquet", default_split="test")
    assert [r.uid for r in parsed.rows] == ["a"] and parsed.rows[0].split == "test"
    assert [str(e) for e in parsed.errors] == ["row 2: 'prompt' must be a non-empty string", "row 3: missing 'id'"]


def test_unknown_file_types_and_missing_files_are_clear_errors(tmp_path):
    (tmp_path / "p.csv").write_text("id,prompt\n")
    with pytest.raises(ValueError, match=r"expected a \.jsonl or \.parquet"):
        read_problem_file(tmp_path / "p.csv")
    with pytest.raises(FileNotFoundError, match="no such problems file"):
        read_problem_file(tmp_path / "missing.jsonl")


def _nested(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def test_rows_the_store_cannot_hold_are_listed_and_every_good_row_is_imported(sessions, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "ok1", "prompt": "2+2?", "answer": 4},
        '{"id": "deep", "prompt": "q", "answer": 1, "meta": ' + "[" * 5000 + "]" * 5000 + "}",
        {"id": "deep2", "prompt": "q", "answer": 1, "meta": _nested(150)},
        {"id": "nul", "prompt": "a\x00b", "answer": 1},
        {"id": "nul-meta", "prompt": "q", "answer": 1, "note": {"k": "a\x00b"}},
        '{"id": "nan", "prompt": "q", "answer": NaN}',
        '{"id": 1e400, "prompt": "q", "answer": 2}',
        {"id": "long-split", "prompt": "q", "answer": 1, "split": "s" * 100},  # PostgreSQL: varchar(64)
        {"id": "ok2", "prompt": "3+3?", "answer": 6},
    ])
    parsed = read_problem_file(path)
    errors = {e.where: e.reason for e in parsed.errors}
    assert errors["line 2"].startswith("nested too deeply to read")
    assert errors["line 3"] == "'meta' is nested more than 100 levels deep"
    assert errors["line 4"].startswith("'prompt' contains a NUL character")
    assert errors["line 5"].startswith("'note.k' contains a NUL character")
    assert errors["line 6"].startswith("'answer' is nan") and errors["line 7"].startswith("'id' is inf")
    with sessions.begin() as s:
        result = import_problems(s, rows=parsed.rows)
    postgres = sessions.kw["bind"].dialect.name == "postgresql"
    assert [str(e) for e in result.refused] == (
        ["line 8: the store refused it: value too long for type character varying(64)"] if postgres else [])
    with sessions.begin() as s:
        stored = set(s.scalars(select(Problem.uid)))
    assert stored == ({"ok1", "ok2"} if postgres else {"ok1", "ok2", "long-split"})
