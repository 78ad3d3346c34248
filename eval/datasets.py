"""Benchmark items in OmniOPD's schema, read from local JSONL or Parquet files.

Nothing is fetched from a hub: public releases are converted once with
`omniopd data convert BENCHMARK SRC DST` (eval/convert.py) and then read from disk.
The schema of each kind is documented in docs/eval.md; in short, one JSON object per
line with

  math: id, problem, answer                      [+ source, level, subject]
  demo: id, prompt, answer                       (the quick-start task; prompt used as is)
  code: id, problem, tests                       [+ starter_code, time_limit_s,
        tests = {inputs, outputs, fn_name?, float_tolerance?}   memory_limit_mb, source,
                                                                 difficulty]

Extra keys are ignored. Every bad row is reported, with its line (JSONL) or row
(Parquet) number, in one `DatasetError`; nothing is dropped silently.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Kind = Literal["math", "code", "demo"]


@dataclass(frozen=True)
class MathItem:
    """One math problem. Invariant: non-empty `id`, `problem` and `answer` (LaTeX or text)."""

    id: str
    problem: str
    answer: str
    source: str | None = None
    level: int | str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class CodeTests:
    """Tests of one programming problem. Invariant: len(inputs) == len(outputs) >= 1.

    Standard-input problems (`fn_name` None): inputs[i] is the full stdin text and
    outputs[i] the expected stdout. Call-based problems (APPS/TACO `fn_name`): inputs[i]
    is the list of positional arguments and outputs[i] the expected return value as
    released (APPS often wraps it in a one-element list; the code grader accepts both).
    `float_tolerance`: tokens that parse as floats match within this absolute/relative
    error (set when the statement says so), else outputs are compared exactly up to
    whitespace.
    """

    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]
    fn_name: str | None = None
    float_tolerance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"inputs": list(self.inputs), "outputs": list(self.outputs)}
        if self.fn_name is not None:
            out["fn_name"] = self.fn_name
        if self.float_tolerance is not None:
            out["float_tolerance"] = self.float_tolerance
        return out


@dataclass(frozen=True)
class CodeItem:
    """One programming problem with its tests. Limits None mean "the configured default"."""

    id: str
    problem: str
    tests: CodeTests = field(repr=False)
    starter_code: str = ""
    time_limit_s: float | None = None
    memory_limit_mb: int | None = None
    source: str | None = None
    difficulty: str | None = None

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "problem": self.problem, "tests": self.tests.to_dict()}
        for key in ("starter_code", "time_limit_s", "memory_limit_mb", "source", "difficulty"):
            value = getattr(self, key)
            if value not in (None, ""):
                row[key] = value
        return row


Item = MathItem | CodeItem


@dataclass(frozen=True)
class RowError:
    """A bad row: `where` is "line N" (JSONL) or "row N" (Parquet), 1-based."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class DatasetError(ValueError):
    """Bad rows in a dataset file; `errors` holds every one of them."""

    def __init__(self, path: Path | str, errors: Sequence[RowError], hint: str = "") -> None:
        self.path = Path(path)
        self.errors = list(errors)
        shown = "\n".join(f"  {e}" for e in self.errors[:100])
        more = f"\n  ... and {len(self.errors) - 100} more" if len(self.errors) > 100 else ""
        super().__init__(f"{path}: {len(self.errors)} bad row(s)\n{shown}{more}{hint}")


# ------------------------------------------------------------------ reading rows


def read_rows(path: Path | str) -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    """Yield ("line N" | "row N", row-or-error) for a .jsonl/.json/.parquet file.

    A `.json` file may hold one JSON array of objects or JSON Lines. Blank lines are
    skipped; a line that is not a JSON object yields a RowError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield f"row {i}", row
        return
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            yield f"line {exc.lineno}", RowError(f"line {exc.lineno}", f"invalid JSON: {exc.msg}")
            return
        for i, row in enumerate(rows, start=1):
            yield (f"row {i}", row) if isinstance(row, dict) else (f"row {i}", RowError(f"row {i}", "not a JSON object"))
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield where, RowError(where, f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        yield (where, row) if isinstance(row, dict) else (where, RowError(where, "not a JSON object"))


# ------------------------------------------------------------------ validation


class BadRow(ValueError):
    """One row breaks the schema (the message says how); collected into a DatasetError."""


def _text(row: dict, key: str, *, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None:
        if required:
            raise BadRow(f"missing field {key!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadRow(f"field {key!r} must be a string, got {type(value).__name__}")
    text = str(value)
    if required and not text.strip():
        raise BadRow(f"field {key!r} is empty")
    return text


def _number(row: dict, key: str, cast: type) -> Any:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise BadRow(f"field {key!r} must be a positive number, got {value!r}")
    return cast(value)


def math_item(row: dict[str, Any]) -> MathItem:
    level = row.get("level")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int | str)):
        raise BadRow(f"field 'level' must be an integer or a string, got {level!r}")
    return MathItem(
        id=_text(row, "id"),
        problem=_text(row, "problem"),
        answer=_text(row, "answer"),
        source=_text(row, "source", required=False),
        level=level,
        subject=_text(row, "subject", required=False),
    )


def demo_item(row: dict[str, Any]) -> MathItem:
    return MathItem(id=_text(row, "id"), problem=_text(row, "prompt"), answer=_text(row, "answer"), source="demo")


def code_tests(value: Any) -> CodeTests:
    if isinstance(value, str):  # Parquet files keep tests as a JSON string
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BadRow(f"field 'tests' is a string but not JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise BadRow("field 'tests' must be an object {inputs, outputs, fn_name?, float_tolerance?}")
    inputs, outputs = value.get("inputs"), value.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise BadRow("tests.inputs and tests.outputs must be lists")
    if len(inputs) != len(outputs):
        raise BadRow(f"tests has {len(inputs)} inputs but {len(outputs)} outputs")
    if not inputs:
        raise BadRow("tests is empty: a problem needs at least one test")
    fn_name = value.get("fn_name") or None
    if fn_name is None:
        bad = [i for i, (x, y) in enumerate(zip(inputs, outputs, strict=True)) if not isinstance(x, str) or not isinstance(y, str)]
        if bad:
            raise BadRow(f"stdin tests must be strings (test {bad[0]} is not); call-based tests need tests.fn_name")
    elif not isinstance(fn_name, str):
        raise BadRow("tests.fn_name must be a string")
    elif any(not isinstance(x, list) for x in inputs):
        raise BadRow("call-based tests (fn_name) need each input to be a list of arguments")
    tol = value.get("float_tolerance")
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, int | float) or tol <= 0):
        raise BadRow(f"tests.float_tolerance must be a positive number, got {tol!r}")
    return CodeTests(tuple(inputs), tuple(outputs), fn_name, float(tol) if tol is not None else None)


def code_item(row: dict[str, Any]) -> CodeItem:
    if "tests" not in row:
        raise BadRow("missing field 'tests'")
    return CodeItem(
        id=_text(row, "id"),
        problem=_text(row, "problem"),
        tests=code_tests(row["tests"]),
        starter_code=_text(row, "starter_code", required=False) or "",
        time_limit_s=_number(row, "time_limit_s", float),
        memory_limit_mb=_number(row, "memory_limit_mb", int),
        source=_text(row, "source", required=False),
        difficulty=_text(row, "difficulty", required=False),
    )


VALIDATORS = {"math": math_item, "demo": demo_item, "code": code_item}


def load_items(path: Path | str, kind: Kind) -> list[Item]:
    """Read and validate a whole file of `kind` items; raise DatasetError listing every bad row."""
    validate = VALIDATORS[kind]
    items: list[Item] = []
    errors: list[RowError] = []
    first_seen: dict[str, str] = {}
    for where, row in read_rows(path):
        if isinstance(row, RowError):
            errors.append(row)
            continue
        try:
            item = validate(row)
        except BadRow as exc:
            errors.append(RowError(where, str(exc)))
            continue
        if item.id in first_seen:
            errors.append(RowError(where, f"duplicate id {item.id!r} (first at {first_seen[item.id]})"))
            continue
        first_seen[item.id] = where
        items.append(item)
    if errors:
        raise DatasetError(path, errors, hint=_hint(kind, errors))
    if not items:
        raise DatasetError(path, [RowError("file", "no rows")])
    return items


def _hint(kind: Kind, errors: list[RowError]) -> str:
    if any("missing field" in e.message for e in errors):
        return (f"\nThe file is not in OmniOPD's {kind} schema (docs/eval.md). Convert a public release with "
                "`omniopd data convert BENCHMARK SRC DST`.")
    return ""


def subsample(items: Sequence[Item], n: int | None, seed: int = 0) -> list[Item]:
    """`n` items drawn without replacement with `seed`, kept in file order (all if n is None).

    The paper evaluates code on 100 randomly sampled items per benchmark; a fixed seed
    makes every checkpoint see the same ones.
    """
    if n is None or n >= len(items):
        return list(items)
    chosen = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in chosen]


def write_jsonl(path: Path | str, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows as JSON Lines atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_parquet(path: Path | str, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows as Parquet; `tests` objects become JSON strings (mixed-type lists of
    call-based tests have no Arrow type)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = [{**r, "tests": json.dumps(r["tests"])} if "tests" in r else r for r in rows]
    tmp = path.with_name(path.name + ".tmp")
    columns = list(dict.fromkeys(k for r in flat for k in r))  # union: rows may omit optional keys
    pq.write_table(pa.table({k: [r.get(k) for r in flat] for k in columns}), tmp)
    tmp.replace(path)
