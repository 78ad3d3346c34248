"""Converters from each benchmark's public release format to OmniOPD's schema.

`convert_files(benchmark, sources, dst)` reads the public files (JSONL, JSON or Parquet,
as downloaded from the hub by the user), converts every row, validates the result
against our schema, and writes `dst` (.jsonl, or .parquet) only if no row was bad.
Rows that are valid but outside what the benchmark evaluates (an image problem in
OlympiadBench, an interactive Codeforces problem, ...) are *skipped*, each with a
reason in the report; rows that cannot be read are *errors* (with line numbers).

Accepted public formats (field names as released):

- math500: HuggingFaceH4/MATH-500 — problem, solution, answer, subject, level, unique_id
- aime24: Maxwell-Jia/AIME_2024 (ID, Problem, Answer) or AI-MO/aimo-validation-aime
  (id, problem, answer, url; rows of other years are skipped)
- aime25: opencompass/AIME2025 (question, answer), yentinglin/aime_2025 or math-ai/aime25
  (id, problem, answer)
- amc23: AI-MO/aimo-validation-amc (id, problem, answer as a float) or math-ai/amc23 (question, answer)
- olympiadbench: Hothan/OlympiadBench — id, question, final_answer (list), context,
  image_1.., language, subject, question_type
- apps / taco: codeparrot/apps, BAAI/TACO — question, input_output (JSON string),
  starter_code, difficulty (+ TACO: time_limit "2 seconds", memory_limit "256 megabytes")
- codecontests: deepmind/code_contests — name, description, public_tests / private_tests /
  generated_tests {input: [...], output: [...]}, time_limit {seconds, nanos}, memory_limit_bytes
- codeforces: open-r1/codeforces — id, title, description, input_format, output_format,
  note, examples, official_tests (or tests) [{input, output}], time_limit (s), memory_limit (MB)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.datasets import (
    VALIDATORS,
    BadRow,
    DatasetError,
    RowError,
    read_rows,
    write_jsonl,
    write_parquet,
)


class Skip(Exception):
    """A readable row that the benchmark does not evaluate (the message says why)."""


@dataclass
class ConvertReport:
    """Outcome of a conversion: `rows` in our schema; `skipped` and `errors` with locations."""

    benchmark: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[RowError] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


# ------------------------------------------------------------------ helpers


def _first(row: dict, *keys: str, required: bool = True) -> Any:
    for key in keys:
        if row.get(key) not in (None, ""):
            return row[key]
    if required:
        raise BadRow(f"missing field {' or '.join(repr(k) for k in keys)}")
    return None


def _answer_text(value: Any) -> str:
    """Answers released as numbers (27.0) become their plain text ("27")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip().strip("$").strip()


def _year_check(row: dict, year: int) -> None:
    for key in ("year", "url", "ID", "id"):
        value = row.get(key)
        found = re.search(r"(?<!\d)(20\d\d)(?!\d)", str(value)) if value is not None else None
        if found and int(found.group(1)) != year:
            raise Skip(f"from {found.group(1)}, not {year} (field {key!r})")


_TOLERANCE = re.compile(
    r"(?:absolute|relative)\s+(?:or\s+(?:absolute|relative)\s+)?error[^.]{0,120}?"
    r"(?:10\s*\^?\s*\{?\s*[-−]\s*(\d+)|1e-(\d+)|10\s*-\s*(\d+)|10<sup[^>]*>\s*-\s*(\d+))",
    re.I | re.S,
)


def float_tolerance(statement: str) -> float | None:
    """The error bound a statement allows ("absolute or relative error ... 10^{-6}"), else None."""
    m = _TOLERANCE.search(statement)
    if not m:
        return None
    digits = next(g for g in m.groups() if g)
    return 10.0 ** -int(digits)


def _lines(value: Any) -> str:
    # APPS/TACO occasionally release a stdin test as a list of lines
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _stdin_tests(inputs: Sequence[Any], outputs: Sequence[Any], statement: str) -> dict[str, Any]:
    if len(inputs) != len(outputs):
        raise BadRow(f"{len(inputs)} test inputs but {len(outputs)} outputs")
    if not inputs:
        raise Skip("no tests released")
    tests: dict[str, Any] = {"inputs": [_lines(x) for x in inputs], "outputs": [_lines(y) for y in outputs]}
    tol = float_tolerance(statement)
    if tol is not None:
        tests["float_tolerance"] = tol
    return tests


# ------------------------------------------------------------------ math


def math500(row: dict, fallback_id: str) -> dict:
    uid = str(row.get("unique_id") or fallback_id)
    return {"id": uid.removesuffix(".json"), "problem": _first(row, "problem"), "answer": _answer_text(_first(row, "answer")),
            "source": "math500", "level": row.get("level"), "subject": row.get("subject")}


def _competition(source: str, year: int | None) -> Callable[[dict, str], dict]:
    def convert(row: dict, fallback_id: str) -> dict:
        if year is not None:
            _year_check(row, year)
        ident = _first(row, "ID", "id", required=False)
        return {"id": str(ident) if ident is not None else fallback_id,
                "problem": _first(row, "Problem", "problem", "question"),
                "answer": _answer_text(_first(row, "Answer", "answer")), "source": source}

    return convert


def olympiadbench(row: dict, fallback_id: str) -> dict:
    if any(row.get(k) for k in row if k.startswith("image_")) or row.get("modality") == "Multimodal":
        raise Skip("has images (text-only evaluation)")
    if str(row.get("language", "English")) != "English":
        raise Skip(f"language {row.get('language')}, not English")
    if str(row.get("subject", "Math")).lower() not in ("math", "maths", "mathematics"):
        raise Skip(f"subject {row.get('subject')}, not math")
    if "proof" in str(row.get("question_type", "")).lower():
        raise Skip("theorem-proving problem: no final answer to grade")
    answers = row.get("final_answer")
    if isinstance(answers, str):
        answers = [answers]
    if not answers:
        raise Skip("no final answer")
    question = _first(row, "question")
    context = row.get("context")
    return {"id": str(row["id"]) if row.get("id") is not None else fallback_id,
            "problem": f"{context}\n\n{question}" if context else question,
            "answer": ", ".join(_answer_text(a) for a in answers), "source": "olympiadbench",
            "subject": row.get("subfield") or row.get("subject")}


# ------------------------------------------------------------------ code


def _input_output(row: dict) -> dict:
    raw = row.get("input_output")
    if raw in (None, ""):
        raise Skip("no tests released (empty input_output)")
    try:
        io = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise BadRow(f"input_output is not JSON: {exc.msg}") from None
    if not isinstance(io, dict) or "inputs" not in io or "outputs" not in io:
        raise BadRow("input_output must hold 'inputs' and 'outputs'")
    return io


def _apps_like(source: str) -> Callable[[dict, str], dict]:
    def convert(row: dict, fallback_id: str) -> dict:
        question = _first(row, "question")
        io = _input_output(row)
        if io.get("fn_name"):
            if len(io["inputs"]) != len(io["outputs"]):
                raise BadRow(f"{len(io['inputs'])} test inputs but {len(io['outputs'])} outputs")
            if not io["inputs"]:
                raise Skip("no tests released")
            tests = {"inputs": io["inputs"], "outputs": io["outputs"], "fn_name": io["fn_name"]}
        else:
            tests = _stdin_tests(io["inputs"], io["outputs"], question)
        ident = row.get("problem_id", row.get("id"))
        out = {"id": f"{source}/{ident}" if ident not in (None, "") else fallback_id, "problem": question,
               "tests": tests, "starter_code": row.get("starter_code") or "", "source": source,
               "difficulty": str(row["difficulty"]) if row.get("difficulty") not in (None, "") else None}
        time_limit = re.match(r"\s*([\d.]+)\s*s", str(row.get("time_limit") or ""))
        memory_limit = re.match(r"\s*(\d+)\s*(?:mega|mb)", str(row.get("memory_limit") or ""), re.I)
        if time_limit:
            out["time_limit_s"] = float(time_limit.group(1))
        if memory_limit:
            out["memory_limit_mb"] = int(memory_limit.group(1))
        return out

    return convert


def codecontests(row: dict, fallback_id: str) -> dict:
    description = _first(row, "description")
    if row.get("input_file") or row.get("output_file"):
        raise Skip("reads or writes named files instead of stdin/stdout")
    inputs: list[Any] = []
    outputs: list[Any] = []
    for key in ("public_tests", "private_tests", "generated_tests"):
        group = row.get(key) or {}
        inputs += list(group.get("input") or [])
        outputs += list(group.get("output") or [])
    out = {"id": str(row.get("name") or fallback_id), "problem": description,
           "tests": _stdin_tests(inputs, outputs, description), "source": "codecontests",
           "difficulty": str(row["difficulty"]) if row.get("difficulty") is not None else None}
    limit = row.get("time_limit")
    if isinstance(limit, dict) and (limit.get("seconds") or limit.get("nanos")):
        out["time_limit_s"] = float(limit.get("seconds") or 0) + float(limit.get("nanos") or 0) / 1e9
    if row.get("memory_limit_bytes"):
        out["memory_limit_mb"] = int(row["memory_limit_bytes"]) // (1 << 20)
    return out


def codeforces(row: dict, fallback_id: str) -> dict:
    if row.get("interaction_format"):
        raise Skip("interactive problem")
    if row.get("input_mode") not in (None, "", "stdio"):
        raise Skip(f"input mode {row.get('input_mode')!r}, not stdio")
    description = _first(row, "description")
    parts = [row.get("title") or "", description]
    for heading, key in (("Input", "input_format"), ("Output", "output_format")):
        if row.get(key):
            parts.append(f"{heading}\n{row[key]}")
    examples = row.get("examples") or []
    for ex in examples:
        parts.append(f"Example\nInput\n{ex['input']}\nOutput\n{ex['output']}")
    if row.get("note"):
        parts.append(f"Note\n{row['note']}")
    statement = "\n\n".join(p for p in parts if p)
    tests = row.get("official_tests") or row.get("tests") or examples
    tests_dict = _stdin_tests([t["input"] for t in tests], [t["output"] for t in tests], statement)
    if row.get("generated_checker") and "float_tolerance" not in tests_dict:
        raise Skip("needs the problem's own checker (several outputs are accepted)")
    out = {"id": str(row.get("id") or fallback_id), "problem": statement, "tests": tests_dict, "source": "codeforces",
           "difficulty": str(row["rating"]) if row.get("rating") is not None else None}
    if row.get("time_limit"):
        out["time_limit_s"] = float(row["time_limit"])
    if row.get("memory_limit"):
        out["memory_limit_mb"] = int(row["memory_limit"])
    return out


CONVERTERS: dict[str, Callable[[dict, str], dict]] = {
    "math500": math500,
    "aime24": _competition("aime24", 2024),
    "aime25": _competition("aime25", 2025),
    "amc23": _competition("amc23", 2023),
    "olympiadbench": olympiadbench,
    "apps": _apps_like("apps"),
    "taco": _apps_like("taco"),
    "codecontests": codecontests,
    "codeforces": codeforces,
}


def convert_rows(benchmark: str, sources: Sequence[Path | str], *, limit: int | None = None) -> ConvertReport:
    """Convert every row of `sources`; locations read "<file> line N" / "<file> row N"."""
    from eval.benchmarks import get_benchmark

    if benchmark not in CONVERTERS:
        raise KeyError(f"no converter for {benchmark!r}; known: {', '.join(CONVERTERS)}")
    convert, validate = CONVERTERS[benchmark], VALIDATORS[get_benchmark(benchmark).kind]
    report = ConvertReport(benchmark)
    seen: dict[str, str] = {}
    for src in map(Path, sources):
        for where, row in read_rows(src):
            loc = f"{src.name} {where}"
            if limit is not None and len(report.rows) >= limit:
                return report
            if isinstance(row, RowError):
                report.errors.append(RowError(loc, row.message))
                continue
            try:
                out = {k: v for k, v in convert(row, f"{src.stem}/{where.split()[-1]}").items() if v is not None}
                validate(out)  # the converter's output must be in our schema
            except Skip as exc:
                report.skipped.append(RowError(loc, str(exc)))
                continue
            except (BadRow, KeyError, TypeError, ValueError) as exc:
                message = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                report.errors.append(RowError(loc, message))
                continue
            if out["id"] in seen:
                report.errors.append(RowError(loc, f"duplicate id {out['id']!r} (first at {seen[out['id']]})"))
                continue
            seen[out["id"]] = loc
            report.rows.append(out)
    return report


def convert_files(benchmark: str, sources: Sequence[Path | str], dst: Path | str, *, limit: int | None = None) -> ConvertReport:
    """Convert and write `dst` (.jsonl or .parquet); raise DatasetError (nothing written) on bad rows."""
    dst = Path(dst)
    if dst.suffix not in (".jsonl", ".parquet"):
        raise ValueError(f"{dst}: the output must end in .jsonl or .parquet")
    report = convert_rows(benchmark, sources, limit=limit)
    if report.errors:
        raise DatasetError(", ".join(map(str, sources)), report.errors)
    if not report.rows:
        raise DatasetError(", ".join(map(str, sources)), [RowError("file", f"no row is usable ({len(report.skipped)} skipped)")])
    (write_parquet if dst.suffix == ".parquet" else write_jsonl)(dst, report.rows)
    return report
