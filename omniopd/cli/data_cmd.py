"""`omniopd data convert`: turn a benchmark's public release into OmniOPD's schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omniopd.cli.common import console, fail

app = typer.Typer(help="Prepare datasets: convert public benchmark releases to local files.", no_args_is_help=True)


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
