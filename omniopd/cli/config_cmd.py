"""`omniopd config show|validate`: inspect a run's configuration."""

from __future__ import annotations

import typer

from omniopd.cli.common import ConfigOpt, SetOpt, console, fail, load
from omniopd.config import dump_config

app = typer.Typer(help="Inspect and check run configuration files.", no_args_is_help=True)


@app.command("show")
def show(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Print the resolved config (file + --set overrides + defaults) as YAML."""
    cfg = load(config, set_)
    console.print(dump_config(cfg, redact=True), highlight=False, markup=False, end="")


@app.command("validate")
def validate(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Check a config file; exit 0 if it is valid, 2 with every problem listed if not.

    An objective that learns from rewards also has its grader checked against data.train
    (when the file is there): every problem must carry what the grader grades against. One
    that needs teacher logits has loss.whitebox_teacher checked: it must name model weights,
    not an API teacher of `teachers`, nor a local folder without weight files."""
    cfg = load(config, set_)
    from eval.rewards import data_misfit

    misfit = data_misfit(cfg) or whitebox_misfit(cfg)
    if misfit:
        fail(f"{config}: {misfit}", code=2)
    teacher = cfg.audit.teacher or "none"
    console.print(
        f"[green]ok[/] {config}: run {cfg.run.name!r}, teacher {teacher}, store {cfg.store_url}",
        soft_wrap=True,
    )


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.pt")


def whitebox_misfit(cfg) -> str | None:
    """Why loss.whitebox_teacher cannot give logits (white-box OPD, Eq. 2), or None. A name
    that is not a local path may be a hub id resolved where the learner runs: not refused."""
    from pathlib import Path

    name = cfg.loss.whitebox_teacher
    if not cfg.loss.needs.teacher_logits or not name:
        return None
    if name in cfg.teachers:
        return (f"loss.whitebox_teacher = {name!r} is the API teacher teachers.{name} ({cfg.teachers[name].kind}), "
                f"which serves text, not weights: loss.method = {cfg.loss.method} needs the teacher's logits; set "
                "loss.whitebox_teacher to a model folder with weights, or use loss.method omniopd for an API teacher")
    path = Path(name)
    if path.is_file() or (path.is_dir() and not any(next(path.glob(g), None) for g in WEIGHT_FILES)):
        return (f"loss.whitebox_teacher = {name}: no model weights there (no {', '.join(WEIGHT_FILES)} in a "
                f"folder); loss.method = {cfg.loss.method} needs the teacher's logits: point it at the teacher's "
                "model folder")
    return None
