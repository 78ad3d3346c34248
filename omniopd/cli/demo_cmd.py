"""`omniopd demo`: watch OmniOPD teach a tiny student on one CPU machine, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omniopd.cli.common import SetOpt, console, err_console, fail

ABLATIONS = ("no-kl", "no-bayes", "uniform")


DEFAULT_CONFIG = {"scripted": Path("configs/demo.yaml"), "model": Path("configs/demo-model.yaml")}


def demo(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Demo config (algorithm, learner, teacher "
                                                "settings); default configs/demo.yaml, or configs/demo-model.yaml "
                                                "with --teacher model.")] = None,
    teacher: Annotated[str, typer.Option(help="scripted: an expert script behind the provider emulator (Gemini wire "
                                         "format), identical samples. model: a trained tiny teacher model served by a "
                                         "real vLLM server, reached in raw /v1/completions mode like a production "
                                         "open-weight teacher; its samples differ, so phi and the Bayesian proxy "
                                         "matter.")] = "scripted",
    teacher_tokenizer: Annotated[str, typer.Option(help="With --teacher model: 'student' (the teacher shares the "
                                                   "student's tokenizer) or 'other' (a different one: they share "
                                                   "text only).")] = "student",
    seed: Annotated[int, typer.Option(min=0, help="Seed of the data, the student's pretraining and sampling.")] = 0,
    ablation: Annotated[
        str | None,
        typer.Option(help="Also run a Table 6 ablation beside the full method: no-kl (beta=0), no-bayes "
                     "(alpha=0, frequentist proxy), uniform (random chunk placement), or all."),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted demo where it stopped.")] = False,
    workdir: Annotated[Path, typer.Option(help="Where prepared models, runs, logs and plots go.")] = Path("runs/demo"),
    smoke: Annotated[bool, typer.Option("--smoke", help="A one-minute check that every part runs on this machine "
                                        "(a smaller student, 8 steps, 1 sample per problem); its numbers mean nothing.")] = False,
    dashboard: Annotated[bool, typer.Option("--dashboard/--no-dashboard", help="Serve `omniopd dashboard` on the "
                                            "work directory while the demo runs and print its address.")] = True,
    compare: Annotated[bool, typer.Option("--compare", help="The paper's Table 1 on this task: base, GRPO, SFT on the "
                                          "teacher's solutions, white-box OPD and OmniOPD (the model teacher behind "
                                          "vLLM) on the same student, data, seed and learner steps (100; --set "
                                          "learner.max_steps=N). Writes compare.md (Pass@1 with 95% intervals, change "
                                          "from base, teacher tokens and spend, wall time) and compare.png (Pass@1 "
                                          "curves) to <workdir>/compare-s<seed>/. Measured: 50 min of arms on 2 CPU cores shared with other work (BENCHMARKS.md).")] = False,
    arms: Annotated[str | None, typer.Option(help="With --compare: the arms to run, comma-separated "
                                             "(default sft,opd,grpo,omniopd).", show_default=False)] = None,
    set_: SetOpt = None,
) -> None:
    """Run OmniOPD end to end on a synthetic step-by-step arithmetic task, in embedded mode.

    Prepares (once, cached) a tiny student that has half-learned the task; serves a scripted expert teacher through the provider emulator (Gemini wire format, rate limits, prices), or with --teacher model a trained teacher model behind a real vLLM server; starts real rollout and audit workers and the learner; measures Pass@1 on 200 held-out problems x 4 samples before and after; prints the teacher spend and writes the training plot; serves the live dashboard meanwhile (its address is printed). About 10 minutes on 2 CPU cores.

    Ctrl-C stops every process cleanly (the vLLM server included); `--resume` continues. Results: <workdir>/[model-[other-]]<variant>-s<seed>/ (demo-result.json, training.png, logs/).

    --compare runs the paper's Table 1 instead: base, GRPO (configs/demo-grpo.yaml), SFT on the teacher model's solutions (configs/demo-sft.yaml), white-box OPD on its logits (configs/demo-opd.yaml) and OmniOPD with it behind vLLM (configs/demo-model.yaml), each a demo run under <workdir>/compare-s<seed>/<arm>/; --resume skips finished arms.
    """
    from workers.demo.run import DemoSettings, run_demo, summary_table

    if compare or arms:
        _compare(arms, seed=seed, workdir=workdir, resume=resume, smoke=smoke, overrides=set_ or [],
                 flags={"--config": config, "--ablation": ablation, "--teacher": teacher if teacher != "scripted" else None})
        return
    if ablation not in (None, "all", *ABLATIONS):
        fail(f"--ablation {ablation!r}: choose one of {', '.join(ABLATIONS)} or all")
    if teacher not in DEFAULT_CONFIG:
        fail(f"--teacher {teacher!r}: choose scripted or model")
    if teacher_tokenizer not in ("student", "other"):
        fail(f"--teacher-tokenizer {teacher_tokenizer!r}: choose student or other")
    if teacher_tokenizer != "student" and teacher != "model":
        fail("--teacher-tokenizer applies to --teacher model only")
    config = config or DEFAULT_CONFIG[teacher]
    if not config.is_file():
        fail(f"--config {config}: no such file (run from the repository root, or pass the demo config)")
    extra = list(ABLATIONS) if ablation == "all" else [ablation] if ablation else []
    settings = DemoSettings(config_path=config, workdir=workdir, seed=seed, variants=["full", *extra],
                            resume=resume, overrides=set_ or [], smoke=smoke, dashboard=dashboard,
                            teacher=teacher, teacher_tokenizer=teacher_tokenizer,
                            log=lambda m: console.print(f"[bold cyan]demo[/] {m}", highlight=False, soft_wrap=True))
    try:
        results = run_demo(settings)
    except KeyboardInterrupt:
        err_console.print("demo interrupted: every process was stopped; continue with `omniopd demo --resume`"
                          + (f" --seed {seed}" if seed else ""), highlight=False)
        raise typer.Exit(130) from None
    except (RuntimeError, ValueError, TimeoutError) as exc:
        fail(f"{exc}\nFix the cause and continue with `omniopd demo --resume`.", code=1)
    console.print()
    console.print(summary_table(results), highlight=False, markup=False, soft_wrap=True)
    full = results[0]
    console.print(
        f"\nPass@1 on held-out problems: {100 * full.pass_before:.1f}% -> {100 * full.pass_after:.1f}% "
        f"({100 * full.delta:+.1f} points) in {full.steps} steps; teacher spend ${full.spend_usd:.4f}; "
        f"plot: {full.output_dir}/training.png; total {full.total_s / 60:.1f} min",
        highlight=False, soft_wrap=True,
    )


def _compare(arms: str | None, *, seed: int, workdir: Path, resume: bool, smoke: bool, overrides: list[str],
             flags: dict) -> None:
    """`omniopd demo --compare`: every arm, then the table and the plot (workers/demo/compare.py)."""
    from workers.demo.compare import ARMS, CompareSettings, compare_table, run_compare

    clash = [name for name, value in flags.items() if value]
    if clash:
        fail(f"--compare runs its own configs and teachers; drop {', '.join(clash)}")
    chosen = [a.strip().lower() for a in arms.split(",") if a.strip()] if arms else list(ARMS)
    unknown = [a for a in chosen if a not in ARMS]
    if unknown or not chosen:
        fail(f"--arms {arms!r}: choose among {', '.join(ARMS)} (comma-separated)")
    settings = CompareSettings(workdir=workdir, seed=seed, resume=resume, overrides=overrides, smoke=smoke,
                               arms=[a for a in ARMS if a in chosen],
                               log=lambda m: console.print(f"[bold cyan]compare[/] {m}", highlight=False, soft_wrap=True))
    try:
        results, base = run_compare(settings)
    except KeyboardInterrupt:
        err_console.print("compare interrupted: every process was stopped; finished arms are kept, continue with "
                          f"`omniopd demo --compare --resume{f' --seed {seed}' if seed else ''}`", highlight=False)
        raise typer.Exit(130) from None
    except (RuntimeError, ValueError, TimeoutError) as exc:
        fail(f"{exc}\nFix the cause and continue with `omniopd demo --compare --resume`.", code=1)
    console.print()
    console.print(compare_table(results, base), highlight=False, markup=False, soft_wrap=True)
    console.print(f"\ntable: {settings.root / 'compare.md'}; curves: {settings.root / 'compare.png'}",
                  highlight=False, soft_wrap=True)
