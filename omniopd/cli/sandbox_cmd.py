"""`omniopd sandbox run`: run one program exactly the way code grading runs it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from omniopd.cli.common import JsonOpt, SetOpt, console, err_console, fail, load

app = typer.Typer(help="Run untrusted programs in the grading sandbox (bubblewrap).", no_args_is_help=True)

_SUFFIXES = {".py": "python", ".cpp": "cpp", ".cc": "cpp", ".cxx": "cpp", ".c++": "cpp", ".c": "c"}


@app.command("run")
def run(
    file: Path = typer.Argument(..., help="Program to run: .py, .cpp/.cc/.cxx or .c (or a model response with a ``` block, with --extract)."),
    stdin: Path | None = typer.Option(None, "--stdin", help="File fed to the program's standard input (default: empty)."),
    time_limit: float | None = typer.Option(None, "--time-limit", help="CPU seconds (default: eval.code_time_limit_s, 4)."),
    memory_limit: int | None = typer.Option(None, "--memory-limit", help="Address space, MiB (default: eval.code_memory_limit_mb, 1024)."),
    language: str | None = typer.Option(None, "--language", help="python, cpp or c (default: from the file suffix)."),
    extract: bool = typer.Option(False, "--extract", help="FILE is a model response: grade's code extraction picks the program."),
    file_io: bool = typer.Option(False, "--file-io", help="Give the input as input.txt and read output.txt (Codeforces file problems)."),
    allow_unsandboxed: bool = typer.Option(
        False, "--allow-unsandboxed", help="Run without bubblewrap if it is missing (rlimits only; never on a shared machine)."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="Optional YAML config whose eval section gives the defaults."),
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compile and run FILE once in a fresh sandbox; print its stdout, stderr, status and times.

    Exit status: 0 if the program ran cleanly (exit 0, within limits), 1 if it did not
    (compile error, runtime error, time/memory/output limit), 2 on usage errors.

    Example: omniopd sandbox run solution.py --stdin tests/1.in --time-limit 2
    """
    from eval.code import extract_code
    from eval.sandbox import Limits, SandboxError, SandboxUnavailable, find_bwrap, run_program

    cfg = load(config, set_).eval if config is not None else None
    if not file.is_file():
        fail(f"{file}: no such file")
    source = file.read_text(encoding="utf-8", errors="replace")
    if extract:
        program = extract_code(source, language)
        if program is None:
            fail(f"{file}: no {language + ' ' if language else ''}code block found in the response", code=1)
        source, language = program.source, program.language
    language = language or _SUFFIXES.get(file.suffix.lower())
    if language is None:
        fail(f"cannot tell the language of {file.name}: pass --language python|cpp|c")
    data = stdin.read_bytes() if stdin is not None else b""
    limits = Limits(
        time_s=time_limit or (cfg.code_time_limit_s if cfg else Limits.time_s),
        memory_mb=memory_limit or (cfg.code_memory_limit_mb if cfg else Limits.memory_mb),
    )
    allow = allow_unsandboxed or bool(cfg and cfg.allow_unsandboxed)
    if allow and find_bwrap() is None:
        err_console.print("[bold red]UNSANDBOXED:[/] bubblewrap is missing; the program runs with rlimits only.")
    try:
        compiled, result = run_program(source, language, data, limits=limits, file_io=file_io, allow_unsandboxed=allow)
    except (SandboxUnavailable, SandboxError, ValueError) as exc:
        fail(str(exc))
    status = "compile_error" if result is None else result.status
    if as_json:
        report = {"status": status, "language": language, "compile": {"ok": compiled.ok, "time_s": compiled.time_s, "messages": compiled.messages}}
        if result is not None:
            report.update(
                stdout=result.stdout.decode("utf-8", "replace"), stderr=result.stderr.decode("utf-8", "replace"),
                exit_code=result.exit_code, signal=result.signal, cpu_s=result.cpu_s, wall_s=result.wall_s,
                max_rss_kb=result.max_rss_kb, note=result.note,
            )  # fmt: skip
        console.print_json(json.dumps(report))
    else:
        _print_human(compiled, result, status)
    raise typer.Exit(0 if status == "ok" else 1)


def _print_human(compiled, result, status: str) -> None:
    if compiled.messages:
        err_console.rule("compiler")
        err_console.print(compiled.messages.rstrip(), markup=False, highlight=False)
    if result is not None:
        console.rule("stdout")
        console.print(result.stdout.decode("utf-8", "replace").rstrip("\n"), markup=False, highlight=False)
        if result.stderr:
            err_console.rule("stderr")
            err_console.print(result.stderr.decode("utf-8", "replace").rstrip("\n"), markup=False, highlight=False)
    console.rule("verdict")
    color = "green" if status == "ok" else "red"
    line = f"[{color}]{status}[/]  compile {compiled.time_s:.3f}s"
    if result is not None:
        exit_text = f"signal {result.signal}" if result.signal else f"exit {result.exit_code}"
        line += f"  {exit_text}  cpu {result.cpu_s:.3f}s  wall {result.wall_s:.3f}s  max-rss {result.max_rss_kb // 1024} MiB"
        if result.note:
            line += f"  ({result.note})"
    console.print(line, soft_wrap=True)
