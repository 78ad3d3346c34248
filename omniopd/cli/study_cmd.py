"""`omniopd study estimator`: the paper's estimator study (Section 6.1, Table 3) against an
open-weight teacher as the oracle."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from omniopd.cli.common import ConfigOpt, SetOpt, console, fail, load

app = typer.Typer(help="Reproduce the paper's analyses: the estimator study (Table 3).", no_args_is_help=True)

ALL_PHIS = "rouge1,rougeL,jaccard,bleu1,bleu2,edit,exact,embedding"


@app.command("estimator")
def estimator(
    config: ConfigOpt,
    chunks: Annotated[int, typer.Option(min=2, help="Student chunks to study (the paper: 1000).")] = 1000,
    n: Annotated[str, typer.Option(help="Comma-separated rollout budgets N; one call of max(N) samples per chunk, "
                                   "smaller N use its first samples.")] = "10,20",
    alpha: Annotated[float | None, typer.Option(min=0, help="Prior strength of Eq. 5 (default: estimator.alpha).")] = None,
    phi: Annotated[str, typer.Option(help="Comma-separated phi functions (names in omniopd.algo.similarity).")] = ALL_PHIS,
    oracle: Annotated[Path | None, typer.Option(help="The teacher's weights, a Hugging Face model directory "
                                                "(default: teachers.<name>.chat_template_from when it is one).")] = None,
    oracle_url: Annotated[str | None, typer.Option(help="Score chunks with a vLLM server (its /v1 URL, serving "
                                                   "the teacher's model name) instead of loading the weights here; "
                                                   "--oracle then only gives the tokenizer.")] = None,
    teacher: Annotated[str | None, typer.Option(help="Teacher name in the config (default: audit.teacher).")] = None,
    serve: Annotated[str, typer.Option(help="none: sample from the teacher's configured server (vLLM via "
                                       "`omniopd models serve`, or any endpoint); hf: serve the oracle model here on "
                                       "127.0.0.1 (OpenAI-compatible wire, transformers sampling).")] = "none",
    out: Annotated[Path | None, typer.Option(help="Output directory (default <run.output_dir>/study-estimator).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Where to write the PNG (default <out>/estimator-study.png).")] = None,
    run_name: Annotated[str | None, typer.Option(help="The study's run in the store, its spend rows' owner "
                                                 "(default <run.name>-study-estimator).")] = None,
    from_chunks: Annotated[Path | None, typer.Option(help="Analyse a finished study's chunks.jsonl again (another "
                                                     "--alpha, --phi or --n up to the samples kept): no sampling, "
                                                     "no spend.")] = None,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples for the intervals.")] = 1000,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="Progress bars (default: on a terminal).")] = None,
    set_: SetOpt = None,
) -> None:
    """Measure how well the frequentist k_sem/N and the Bayesian proxy (Eq. 3-5) track the teacher's exact,
    length-normalised chunk probability: for every phi and N, MSE and Pearson with 95% bootstrap intervals.

    Student chunks use the config's student, M, C and placement (--set chunking.c=50 ...); samples go through the
    teacher client with the ledger and caps. Writes results.json, table.md (the paper's Table 3 beside), chunks.jsonl
    and a PNG. Definitions: docs/estimator-study.md.
    """
    from omniopd.study.estimator_study import StudySettings
    from omniopd.study.run import StudyRequest, run_estimator_study

    cfg = load(config, set_)
    try:
        ns = tuple(sorted({int(x) for x in n.split(",") if x.strip()}))
    except ValueError:
        fail(f"--n {n!r}: give comma-separated integers, e.g. 10,20")
    phis = tuple(p.strip() for p in phi.split(",") if p.strip())
    from omniopd.algo.similarity import SIMILARITIES

    unknown = [p for p in phis if p not in SIMILARITIES]
    if unknown:
        fail(f"--phi: unknown {unknown}; choose from {', '.join(SIMILARITIES)}")
    try:
        settings = StudySettings(chunks=chunks, ns=ns, alpha=cfg.estimator.alpha if alpha is None else alpha,
                                 phis=phis, cut=cfg.estimator.cut, resamples=resamples, seed=cfg.run.seed)
    except ValueError as exc:
        fail(str(exc))
    out_dir = out or Path(cfg.run.output_dir) / "study-estimator"
    request = StudyRequest(cfg, config, settings, out_dir, oracle_dir=oracle, teacher_name=teacher, serve=serve,
                           run_name=run_name, plot=plot, oracle_url=oracle_url)
    show = sys.stdout.isatty() if progress is None else progress
    log = lambda m: console.print(f"[bold cyan]study[/] {m}", highlight=False, soft_wrap=True)  # noqa: E731
    from rich.progress import Progress

    from omniopd.study.oracle import OracleEncodingError, OracleRefusedError
    from omniopd.study.sampling import StudySamplingError

    with Progress(console=console, disable=not show, transient=True) as bars:
        tasks: dict[str, int] = {}

        def tick(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done)

        try:
            if from_chunks is not None:
                from omniopd.study.run import reanalyse

                result, paths = reanalyse(from_chunks, settings, out_dir, plot, log=log)
            else:
                result, paths = run_estimator_study(request, log=log, progress=tick)
        except (OracleEncodingError, OracleRefusedError, StudySamplingError, ValueError, OSError) as exc:
            fail(str(exc), code=1)
    from omniopd.study.report import markdown

    console.print(markdown(result), highlight=False, markup=False, soft_wrap=True)
    console.print("\ntimes: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
                  + f"; teacher spend ${result.spend_usd:.4f} (run {result.run_name!r}, `omniopd spend`)", highlight=False)
    console.print("outputs: " + ", ".join(str(p) for p in paths.values()), highlight=False, soft_wrap=True)
