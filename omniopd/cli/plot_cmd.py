"""`omniopd plot`: training curves of a run as a PNG (the paper's Fig. 3 panels)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omniopd.cli.common import ConfigOpt, SetOpt, console, fail, load, read_store

RunOpt = Annotated[
    str | None, typer.Option("--run", "-r", help="Run name (default: run.name of the config).", show_default=False)
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="PNG to write (default: <run.output_dir>/plots/<run>-training.png).",
                 show_default=False),
]


def plot(config: ConfigOpt, run: RunOpt = None, out: OutOpt = None, set_: SetOpt = None) -> None:
    """Plot a run's training curves (the paper's Fig. 3 panels) as a PNG.

    Against learner step: on-policy loss (and its chunk term), KL to the base model per
    un-audited token, and Pass@1 of the run's evaluated checkpoints with 95% bootstrap
    intervals: one series per benchmark, item count and k (the evaluator's curve during
    training, eval.every_steps, and any `omniopd eval --run R --step S`). Reads the store
    only (learner_steps and eval_runs); works while the run is training.
    """
    cfg = load(config, set_)
    from db.repo_bundles import learner_steps
    from db.repo_eval import list_eval_runs
    from db.repo_runs import get_run
    from omniopd.train.plot import Curve, plot_training

    name = run or cfg.run.name
    with read_store(cfg, config) as session:
        record = get_run(session, name=name)
        steps = learner_steps(session, run_id=record.id)
        evals = list_eval_runs(session, run_id=record.id)
    if not steps:
        fail(f"run {name!r} has no learner steps yet; start `omniopd learner --config {config}` first", code=1)

    def curve(key: str) -> Curve:
        points = [(s.step, s.metrics.get(key)) for s in steps if s.metrics.get(key) is not None]
        return Curve([p[0] for p in points], [float(p[1]) for p in points])

    eval_curves = eval_series(evals)
    target = out or Path(cfg.run.output_dir) / "plots" / f"{name}-training.png"
    written = plot_training(
        target, title=f"run {name}: {cfg.loss.method}, {len(steps)} steps",
        loss=Curve([s.step for s in steps], [float(s.loss if s.loss is not None else "nan") for s in steps]),
        chunk_loss=curve("chunk_loss"), kl=curve("kl"), evals=eval_curves,
    )
    console.print(f"wrote {written}", highlight=False, soft_wrap=True)


def eval_series(evals) -> dict:
    """Finished evaluations linked to a step -> one EvalCurve per (benchmark, items, k),
    labelled "<benchmark> (<items> items x <k>)"; of two at one step, the later one."""
    from omniopd.train.plot import EvalCurve

    series: dict[str, dict[int, tuple[float, float | None, float | None]]] = {}
    for e in evals:
        if e.status != "finished" or e.pass_at_1 is None or e.step is None:
            continue
        m = e.metrics or {}
        items = m.get("n_items")
        name = f"{e.benchmark} ({items} items x {m.get('samples_per_item', e.samples)})" if items else e.benchmark
        series.setdefault(name, {})[e.step] = (e.pass_at_1, m.get("ci_low"), m.get("ci_high"))
    out = {}
    for name, points in series.items():
        steps = sorted(points)
        out[name] = EvalCurve(steps, [points[s][0] for s in steps], [points[s][1] for s in steps],
                              [points[s][2] for s in steps])
    return out
