"""`omniopd data import|convert`: training problems into the store; benchmarks into our schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omniopd.cli.common import ConfigOpt, JsonOpt, SetOpt, console, err_console, fail, load

app = typer.Typer(
    help="Datasets: import training problems into the store, convert public benchmark releases.",
    no_args_is_help=True,
)


@app.command("import")
def import_(
    config: ConfigOpt,
    file: Path | None = typer.Argument(
        None, help="JSONL or Parquet file of problems (default: data.train of the config).", show_default=False
    ),
    split: str = typer.Option("train", "--split", help="Split of rows that do not name one."),
    strict: bool = typer.Option(False, "--strict", help="Import nothing unless every row is valid."),
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Import training problems from a JSONL or Parquet file.

    Each row: {id, prompt, answer | tests, split?, source?, ...}.
    Good rows are imported once (re-importing is idempotent by content hash); every bad
    row is reported with its line and the reason, and the exit status is 1 if there was any.
    """
    cfg = load(config, set_)
    path = file or cfg.data.train
    if path is None:
        fail("no file given and the config has no data.train")
    import json

    from db.migrate import SchemaNotCurrent
    from db.problem_files import read_problem_file
    from db.repo_problems import import_problems
    from db.store import open_store

    try:
        parsed = read_problem_file(path, default_split=split)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    try:
        store = open_store(cfg, config, pool_size=1)
    except SchemaNotCurrent as exc:
        fail(str(exc))
    label = "row" if path.suffix == ".parquet" else "line"
    inserted, present, conflicts = 0, 0, []
    try:
        if not (strict and parsed.errors):
            with store.sessions() as session:
                result = import_problems(session, rows=parsed.rows, where_label=label)
                conflicts = [*result.conflicts, *result.refused]
                if strict and conflicts:
                    session.rollback()
                else:
                    session.commit()
                    inserted, present = result.inserted, result.already_present
    finally:
        store.dispose()
    bad = [*parsed.errors, *conflicts]
    if json_:
        console.print_json(json.dumps({
            "file": str(path), "inserted": inserted, "already_present": present,
            "errors": [{"where": e.where, "reason": e.reason} for e in bad],
            "repeats": [{"where": e.where, "reason": e.reason} for e in parsed.repeats],
        }))
    else:
        for err in bad:
            err_console.print(f"{path}: {err}", style="red", highlight=False, markup=False, soft_wrap=True)
        for note in parsed.repeats:
            err_console.print(f"{path}: {note}", highlight=False, markup=False, soft_wrap=True)
        nothing = " (nothing imported: --strict)" if strict and bad else ""
        console.print(
            f"{path}: {inserted} new problems, {present} already in the store, {len(bad)} bad rows{nothing}",
            highlight=False, soft_wrap=True,
        )
    if bad:
        raise typer.Exit(1)


@app.command("convert")
def convert(
    benchmark: Annotated[str, typer.Argument(help="math500, aime24, aime25, amc23, olympiadbench, apps, codecontests, taco or codeforces.", show_default=False)],
    paths: Annotated[list[Path], typer.Argument(help="SRC... DST: one or more public files (JSONL, JSON or Parquet, as released), then the output (.jsonl or .parquet).", show_default=False)],
    limit: Annotated[int | None, typer.Option(help="Write at most this many rows.", min=1)] = None,
    show_skipped: Annotated[int, typer.Option(help="List this many skipped rows with their reasons.", min=0)] = 10,
) -> None:
    """Convert BENCHMARK's public release (SRC...) into OmniOPD's JSONL schema at DST.

    Example: omniopd data convert math500 MATH-500/test.jsonl data/eval/math500.jsonl

    Every bad row is listed with its line number and nothing is written; rows the
    benchmark does not evaluate (images, interactive problems, ...) are skipped and
    counted with their reasons. The schema is documented in docs/eval.md.
    """
    from collections import Counter

    from eval.convert import CONVERTERS, convert_files
    from eval.datasets import DatasetError

    if benchmark not in CONVERTERS:
        fail(f"no converter for {benchmark!r}; choose one of: {', '.join(CONVERTERS)}")
    if len(paths) < 2:
        fail("give at least one source file and the output file: SRC... DST")
    *sources, dst = paths
    try:
        report = convert_files(benchmark, sources, dst, limit=limit)
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    console.print(f"[green]wrote[/] {len(report.rows)} {benchmark} rows to {dst}", soft_wrap=True)
    if report.skipped:
        reasons = Counter(e.message for e in report.skipped)
        console.print(f"skipped {len(report.skipped)} rows the benchmark does not evaluate:")
        for reason, count in reasons.most_common():
            console.print(f"  {count:5d}  {reason}", highlight=False, markup=False, soft_wrap=True)
        for e in report.skipped[:show_skipped]:
            console.print(f"        {e}", highlight=False, markup=False, style="dim", soft_wrap=True)
