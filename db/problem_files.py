"""Read training problems from JSONL or Parquet, validating every row.

Row schema (one JSON object per line, or one Parquet row):

    id       str | int, required, unique            the problem's key
    prompt   str, required, non-empty               the question (template applied later)
    answer   str | number                            reference answer (math)
    tests    [{"input": str, "output": str}, ...]    stdin/stdout tests (code)
    split    str, default: the --split option        train / test / ...
    source   str, optional                           dataset of origin
    ...      anything else                           kept in `meta`

At least one of `answer` and `tests` is required. Nothing is dropped silently: each bad
row yields a `RowError` naming its line (JSONL, 1-based) or row (Parquet, 1-based) and
what is wrong; an exact repeat of an earlier row in the same file is reported too.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KNOWN_KEYS = ("id", "prompt", "answer", "tests", "split", "source")
MAX_DEPTH = 100
"""Deepest nesting of lists and objects a row may have (a deeper one is a bad row)."""


@dataclass(frozen=True)
class ProblemRow:
    """A valid row. content_hash = sha256 of its canonical JSON (id included)."""

    line: int
    uid: str
    prompt: str
    answer: str | None
    tests: list[dict[str, str]] | None
    split: str
    source: str | None
    meta: dict[str, Any]
    content_hash: str


@dataclass(frozen=True)
class RowError:
    where: str  # "line 7" or "row 7"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class ProblemFile:
    path: Path
    rows: list[ProblemRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    repeats: list[RowError] = field(default_factory=list)  # exact duplicates, imported once


def read_problem_file(path: str | Path, *, default_split: str = "train") -> ProblemFile:
    """Parse and validate every row of a .jsonl / .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such problems file")
    result = ProblemFile(path)
    if path.suffix == ".parquet":
        label, records = "row", _parquet_records(path)
    elif path.suffix in (".jsonl", ".json", ".ndjson"):
        label, records = "line", _jsonl_records(path)
    else:
        raise ValueError(f"{path}: expected a .jsonl or .parquet file")
    first_seen: dict[str, ProblemRow] = {}
    for number, record in records:
        where = f"{label} {number}"
        if isinstance(record, RowError):
            result.errors.append(RowError(where, record.reason))
            continue
        try:
            row = _validate(record, number, default_split)
        except ValueError as exc:
            result.errors.append(RowError(where, str(exc)))
            continue
        earlier = first_seen.get(row.uid)
        if earlier is None:
            first_seen[row.uid] = row
            result.rows.append(row)
        elif earlier.content_hash == row.content_hash:
            result.repeats.append(RowError(where, f"repeats {label} {earlier.line} (id {row.uid!r}); imported once"))
        else:
            result.errors.append(
                RowError(where, f"id {row.uid!r} is already used by {label} {earlier.line} with different content")
            )
    return result


def _jsonl_records(path: Path):
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue  # a blank line is not a row
            try:
                yield number, json.loads(raw)
            except UnicodeDecodeError as exc:
                yield number, RowError("", f"not UTF-8 ({exc.reason} at byte {exc.start})")
            except json.JSONDecodeError as exc:
                yield number, RowError("", f"not valid JSON ({exc.msg} at column {exc.colno})")
            except RecursionError:
                yield number, RowError("", f"nested too deeply to read (a row may nest lists and objects {MAX_DEPTH} levels deep)")


def _parquet_records(path: Path):
    import pyarrow.parquet as pq

    yield from enumerate(pq.read_table(path).to_pylist(), start=1)


def _text(value: Any, key: str, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise ValueError(f"missing {key!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        # json reads NaN, Infinity and 1e400 as floats; stored, they would read "nan", "inf"
        raise ValueError(f"{key!r} is {value!r} (NaN, Infinity or a number too large for a float); "
                         "write it as a JSON string if that is what you mean")
    text = str(value)
    if required and not text.strip():
        raise ValueError(f"{key!r} is empty")
    return text


def _tests(value: Any) -> list[dict[str, str]] | None:
    if value is None:
        return None
    form = 'a list of {"input": str, "output": str} objects'
    if not isinstance(value, list) or not value:
        raise ValueError(f"'tests' must be {form}")
    for k, case in enumerate(value):
        if not isinstance(case, dict) or set(case) != {"input", "output"}:
            raise ValueError(f"'tests'[{k}] must be an object with exactly 'input' and 'output'")
        if not all(isinstance(case[f], str) for f in ("input", "output")):
            raise ValueError(f"'tests'[{k}]: 'input' and 'output' must be strings")
    return [{"input": c["input"], "output": c["output"]} for c in value]


def _check_storable(value: Any, key: str, depth: int) -> None:
    """Refuse what the store cannot hold faithfully: a NUL character (PostgreSQL text and
    JSON refuse it, and one such row would fail the whole import), NaN or infinite numbers,
    nesting deeper than MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{key!r} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{key!r} contains a NUL character (\\u0000), which the store cannot hold; remove it")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{key!r} holds {value!r}, which JSON cannot store; write it as a string")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_storable(k, key, depth + 1)
            _check_storable(v, f"{key}.{k}" if depth < 3 else key, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_storable(v, key, depth + 1)


def _validate(record: Any, line: int, default_split: str) -> ProblemRow:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    uid = _text(record.get("id"), "id", required=True)
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("missing 'prompt'" if prompt is None else "'prompt' must be a non-empty string")
    answer = _text(record.get("answer"), "answer", required=False)
    tests = _tests(record.get("tests"))
    if answer is None and tests is None:
        raise ValueError("needs 'answer' (math) or 'tests' (code)")
    split = _text(record.get("split"), "split", required=False) or default_split
    source = _text(record.get("source"), "source", required=False)
    meta = {k: v for k, v in record.items() if k not in KNOWN_KEYS}
    for key, value in (("id", uid), ("prompt", prompt), ("answer", answer), ("split", split), ("source", source),
                       ("tests", tests), *meta.items()):
        _check_storable(key, key, 0)
        _check_storable(value, key, 1)
    canonical = {"id": uid, "prompt": prompt, "answer": answer, "tests": tests, "split": split, "source": source, "meta": meta}
    try:
        encoded = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a field cannot be stored as JSON ({exc})") from None
    digest = hashlib.sha256(encoded.encode()).hexdigest()
    return ProblemRow(line, uid, prompt, answer, tests, split, source, meta, digest)  # type: ignore[arg-type]
