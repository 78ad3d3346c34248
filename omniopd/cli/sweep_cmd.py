"""`omniopd sweep`: a grid over config keys, resumable cell by cell (Tables 4-5 of the paper)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omniopd.cli.common import ConfigOpt, SetOpt, console, fail


def sweep(
    config: ConfigOpt,
    grid: Annotated[list[str], typer.Option("--grid", "-g", help="KEY=V1,V2,... over a dotted config key "
                                            "(repeatable; every combination is a cell), e.g. chunking.m=1,3,5.")],
    kind: Annotated[str, typer.Option(help="What a cell runs: demo (train with `omniopd demo`, Pass@1 before/after "
                                      "with intervals) or study (the estimator study for the cell's estimator.phi / "
                                      "n / alpha and chunking: MSE and Pearson with intervals).")] = "demo",
    out: Annotated[Path, typer.Option(help="The sweep's directory: cells/<id>/cell.json, table.md, sweep.png. "
                                      "Rerunning with the same --out completes only missing and failed cells.")] = Path("runs/sweep"),
    teacher: Annotated[str, typer.Option(help="kind demo: scripted or model (the demo's --teacher).")] = "model",
    prepared: Annotated[Path | None, typer.Option(help="kind demo: the prepared student/teacher directory every cell "
                                                  "shares (default <out>/prepared-s<seed>, prepared once).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="kind demo: the demo's seed.")] = 0,
    chunks: Annotated[int, typer.Option(min=2, help="kind study: student chunks per cell.")] = 300,
    oracle: Annotated[Path | None, typer.Option(help="kind study: the teacher's weights (see `omniopd study estimator`).")] = None,
    serve: Annotated[str, typer.Option(help="kind study: none or hf (see `omniopd study estimator`).")] = "none",
    set_: SetOpt = None,
) -> None:
    """Run every cell of a grid over config keys and print one table with intervals, teacher spend and time per cell.

    A cell that fails is marked failed with its reason and the sweep goes on; rerun the same command to complete the
    missing and failed cells only (finished cells are kept). Writes <out>/table.md and <out>/sweep.png.
    """
    from omniopd.config import ConfigError, load_config
    from omniopd.study.sweep import cells, parse_grid, plot_sweep, results_table, run_sweep
    from omniopd.study.sweep_runners import DemoCell, StudyCell

    try:
        parsed = parse_grid(grid)
    except ValueError as exc:
        fail(str(exc))
    for overrides in cells(parsed):  # a mistyped key or value fails here, before any cell runs
        try:
            load_config(config, [*(set_ or []), *(f"{k}={v}" for k, v in overrides.items())])
        except ConfigError as exc:
            fail(f"cell {overrides}: {exc}")
    log = lambda m: console.print(f"[bold cyan]sweep[/] {m}", highlight=False, soft_wrap=True)  # noqa: E731
    if kind == "demo":
        runner = DemoCell(config, teacher=teacher, seed=seed, prepared_root=prepared or out / f"prepared-s{seed}",
                          base_overrides=tuple(set_ or []), log=log)
    elif kind == "study":
        runner = StudyCell(config, chunks=chunks, oracle_dir=oracle, serve=serve, base_overrides=tuple(set_ or []), log=log)
    else:
        fail(f"--kind {kind!r}: choose demo or study")
    try:
        states = run_sweep(parsed, runner, out, log=log)
    except ValueError as exc:
        fail(str(exc))
    table = results_table(parsed, states, runner.columns)
    (out / "table.md").write_text(table + "\n")
    plot_sweep(states, runner.columns[1][0], out / "sweep.png")  # Pass@1 after, or the Bayesian MSE
    console.print(table, highlight=False, markup=False, soft_wrap=True)
    failed = [s for s in states if s.status == "failed"]
    console.print(f"\n{len(states) - len(failed)} of {len(states)} cells done; table {out / 'table.md'}, plot "
                  f"{out / 'sweep.png'}" + (f"; {len(failed)} failed: rerun the same command to retry them" if failed else ""),
                  highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)
