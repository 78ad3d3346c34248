"""`omniopd eval`: Pass@1 of a checkpoint or an endpoint on math and code benchmarks;
`omniopd eval compare A B`: differences between two evaluations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from omniopd.cli.common import JsonOpt, SetOpt, console, err_console, fail, load, read_store

app = typer.Typer(
    help=(
        "Evaluate a checkpoint (--model) or any OpenAI-compatible endpoint (--endpoint) on math and code "
        "benchmarks: Pass@1 averaged over k samples per item (paper §5.1). Results go to the store "
        "(eval_runs/eval_results; a rerun of the same command resumes) and to JSON/Markdown files. "
        "`omniopd eval compare A B` compares two evaluations."
    ),
    invoke_without_command=True,
)

OptConfig = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config of the run (eval.*, rollout.backend, store).", show_default=False)
]


@app.callback()
def evaluate(
    ctx: typer.Context,
    config: OptConfig = None,
    benchmarks: Annotated[str | None, typer.Option("--benchmarks", "-b", help="Comma-separated benchmarks, or `math` / `code` (default: eval.benchmarks).", show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Folder of <benchmark>.jsonl files (default: eval.data_dir).", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", help="Local checkpoint (HF layout) sampled with rollout.backend (hf or vllm).", show_default=False)] = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="OpenAI-compatible server: http://host:port, its /v1 base, or a full .../completions URL.", show_default=False)] = None,
    endpoint_model: Annotated[str | None, typer.Option("--endpoint-model", help="Model name sent to --endpoint (default: the first one its /v1/models lists).", show_default=False)] = None,
    endpoint_api: Annotated[str | None, typer.Option("--endpoint-api", help="chat (the server applies the chat template) or completions (prompt sent as is); default eval.endpoint_api.", show_default=False)] = None,
    api_key_env: Annotated[str | None, typer.Option("--api-key-env", help="Environment variable holding the endpoint's API key (never printed or stored).", show_default=False)] = None,
    samples: Annotated[int | None, typer.Option("--samples", "-k", min=1, help="Samples per item (default: eval.samples; paper: 16).", show_default=False)] = None,
    max_items: Annotated[int | None, typer.Option("--max-items", min=1, help="At most N items per benchmark (a fixed random subset, the same for every model).", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: <eval.output_dir or run.output_dir/eval>/<tag>).", show_default=False)] = None,
    run: Annotated[str | None, typer.Option("--run", help="Training run name this checkpoint belongs to (links results to it for plots).", show_default=False)] = None,
    step: Annotated[int | None, typer.Option("--step", min=0, help="With --run: learner step of the checkpoint; without --model, evaluates the policy version saved at that step.", show_default=False)] = None,
    name: Annotated[str | None, typer.Option("--name", help="Evaluation tag (eval-run keys are <tag>/<benchmark>); default: model name + settings hash.", show_default=False)] = None,
    labels: Annotated[str | None, typer.Option("--labels", help="Row labels of the tables, Header=value pairs: 'Student=Qwen3-4B,Teacher=Qwen3-32B,Method=OmniOPD'.", show_default=False)] = None,
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Evaluate a model: k samples per item, graded (math-verify / sandboxed tests), stored as they are graded.

    Examples:

      omniopd eval -c run.yaml --benchmarks math500,aime24 --data-dir data/eval --model runs/x/ckpt-100 --samples 16

      omniopd eval -c run.yaml -b math --endpoint http://127.0.0.1:8000 --endpoint-model Qwen/Qwen3-32B

      omniopd eval -c run.yaml -b math500 --run my-run --step 200      # the checkpoint of step 200, linked for plots

    A rerun with the same settings resumes: samples already in the store are not generated again.
    """
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        fail("--config is required (the run's YAML: eval settings, rollout backend, store)")
    cfg = load(config, set_)
    if endpoint_api is not None:
        cfg.eval.endpoint_api = _choice("--endpoint-api", endpoint_api, ("chat", "completions"))

    from db.migrate import SchemaNotCurrent
    from eval.report import report_tables
    from eval.runner import Target, evaluate_config
    from eval.tables import print_table

    try:
        header_row = _labels(labels)
        target = Target(model=model, endpoint=endpoint, endpoint_model=endpoint_model, api_key_env=api_key_env,
                        run=run, step=step)
    except ValueError as exc:
        fail(str(exc))

    def started(tag: str, what: str) -> None:
        err_console.print(f"evaluation [bold]{tag}[/] of {what}: k={samples or cfg.eval.samples}", highlight=False)

    try:
        with RichProgress() as progress:
            report, paths = evaluate_config(cfg, config, benchmarks, target, samples=samples, max_items=max_items,
                                            data_dir=data_dir, out=out, name=name, labels=header_row,
                                            progress=progress, on_start=started)
    except KeyboardInterrupt:
        fail("interrupted; what was graded is stored — rerun the same command to resume", code=130)
    except SchemaNotCurrent as exc:
        fail(str(exc))
    except KeyError as exc:  # an unknown benchmark name: the registry lists the known ones
        fail(str(exc.args[0]))
    except (OSError, ValueError, LookupError, RuntimeError) as exc:
        fail(f"{type(exc).__name__}: {exc}", code=1)

    if json_:
        typer.echo(paths["json"].read_text())
        return
    headers, row = header_row or (("Model",), (report.tag,))
    for _, title, table in report_tables({o.benchmark: o.score for o in report.outcomes}, row, headers):
        print_table(table, console=console, title=f"{title}: Pass@1 (%) over {report.plan.samples} samples")
    for o in report.outcomes:
        console.print(f"{o.key}: {o.generated} generated, {o.reused} from the store", highlight=False)
    console.print(f"results: {paths['json']}  {paths['markdown']}", highlight=False, soft_wrap=True)


@app.command("compare")
def compare_cmd(
    a: Annotated[str, typer.Argument(help="Evaluation A: a results.json file, an eval-run key, or an evaluation tag (all its benchmarks).")],
    b: Annotated[str, typer.Argument(help="Evaluation B (same forms).")],
    config: OptConfig = None,
    confidence: Annotated[float, typer.Option("--confidence", min=0.5, max=0.999, help="Level of the paired bootstrap interval.")] = 0.95,
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Pass@1 of B minus A per benchmark, on the items both evaluated, with paired bootstrap intervals.

    Example: omniopd eval compare runs/x/eval/ckpt-100-1a2b3c4d/results.json ckpt-200-5e6f7a8b -c run.yaml
    """
    from eval.report import (
        compare,
        compare_json,
        compare_markdown,
        load_json_scores,
        load_store_scores,
    )

    sets = []
    for spec in (a, b):
        try:
            if Path(spec).is_file():
                sets.append(load_json_scores(Path(spec)))
                continue
            if config is None:
                fail(f"{spec!r} is not a file; give --config to look it up in the store")
            sets.append(_store_scores(load(config, set_), config, spec, load_store_scores))
        except (ValueError, LookupError) as exc:
            fail(str(exc))
    try:
        diffs = compare(*sets, confidence=confidence)
    except ValueError as exc:
        fail(str(exc))
    if json_:
        typer.echo(json.dumps(compare_json(*sets, diffs), indent=2))
    else:
        console.print(compare_markdown(*sets, diffs, confidence), highlight=False, markup=False, soft_wrap=True)


# ------------------------------------------------------------------ helpers


def _choice(option: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        fail(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _labels(spec: str | None) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    if not spec:
        return None
    pairs = [p.split("=", 1) for p in spec.split(",")]
    if any(len(p) != 2 or not p[0].strip() for p in pairs):
        raise ValueError(f"--labels {spec!r}: expected Header=value pairs separated by commas")
    return tuple(p[0].strip() for p in pairs), tuple(p[1].strip() for p in pairs)


def _store_scores(cfg: Any, config: Path, key: str, loader: Any) -> Any:
    with read_store(cfg, config) as session:
        return loader(session, key)


class RichProgress:
    """Progress bars on stderr: samples done of k x items, items complete, pass rate so far, ETA."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bars = Progress(
            TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
            TextColumn("{task.fields[items]} items"), TextColumn("pass {task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console,
        )
        self.tasks: dict[str, Any] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.state: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def start(self, benchmark: str, *, n_items: int, total: int, stored: Any) -> None:
        k = total // max(n_items, 1)
        self.counts[benchmark] = {}
        self.state[benchmark] = {"n_items": n_items, "k": k, "done": 0, "correct": 0}
        task = self.bars.add_task(benchmark, total=total, items="", rate="-")
        self.tasks[benchmark] = task
        for item_id, correct in stored:
            self._count(benchmark, item_id, correct)
        # Stored samples are not progress of this process: they start the bar, not its clock.
        self.bars.reset(task, total=total, completed=len(stored), items=self._items(benchmark), rate=self._rate(benchmark))

    def advance(self, benchmark: str, results: Any) -> None:
        for r in results:
            self._count(benchmark, r.item_id, r.correct)
        self.bars.update(self.tasks[benchmark], advance=len(results), items=self._items(benchmark), rate=self._rate(benchmark))

    def finish(self, benchmark: str, score: Any) -> None:
        self.bars.update(self.tasks[benchmark], rate=f"{100 * score.pass_at_1:.1f}%")

    def _count(self, benchmark: str, item_id: str, correct: bool) -> None:
        st, counts = self.state[benchmark], self.counts[benchmark]
        counts[item_id] = counts.get(item_id, 0) + 1
        st["done"] += 1
        st["correct"] += int(correct)

    def _items(self, benchmark: str) -> str:
        st = self.state[benchmark]
        return f"{sum(c >= st['k'] for c in self.counts[benchmark].values())}/{st['n_items']}"

    def _rate(self, benchmark: str) -> str:
        st = self.state[benchmark]
        return f"{100 * st['correct'] / st['done']:.1f}%" if st["done"] else "-"
