"""`python -m eval.lmeval ARGS`: lm-eval's CLI with OmniOPD's tasks and model registered.

    python -m eval.lmeval write-tasks --samples 4 --out /tmp/omniopd_tasks [--benchmarks math500,aime24]
        [--temperature 1.0 --top-p 1.0 --max-tokens 32768]
    python -m eval.lmeval run --model omniopd-completions \\
        --model_args base_url=http://127.0.0.1:8000/v1/completions,model=M,tokenizer_backend=none \\
        --tasks omniopd_math500 --metadata data_dir=data/eval

Anything but `write-tasks` goes to lm-eval unchanged, after importing
eval.lmeval.model (registers `omniopd-completions`) and adding
`--include_path <this package>` when no include path is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _write_tasks(argv: list[str]) -> None:
    from eval.benchmarks import parse_benchmarks
    from eval.lmeval.taskgen import PAPER_MAX_TOKENS, PAPER_SAMPLES, write_task_dir

    p = argparse.ArgumentParser(prog="python -m eval.lmeval write-tasks", description="Write omniopd_* task YAMLs for another k or sampling setting.")
    p.add_argument("--out", type=Path, required=True, help="directory to write (give it to lm-eval as --include_path)")
    p.add_argument("--samples", type=int, default=PAPER_SAMPLES, help="k samples per item (repeats)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=PAPER_MAX_TOKENS)
    p.add_argument("--benchmarks", default=None, help="comma-separated names (default: all)")
    a = p.parse_args(argv)
    names = [b.name for b in parse_benchmarks(a.benchmarks)] if a.benchmarks else None
    for path in write_task_dir(a.out, samples=a.samples, temperature=a.temperature, top_p=a.top_p,
                               max_tokens=a.max_tokens, benchmarks=names):
        print(path)


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["write-tasks"]:
        _write_tasks(argv[1:])
        return
    import eval.lmeval.model  # noqa: F401  (registers omniopd-completions)

    if argv and not any(a.startswith("--include_path") for a in argv) and argv[0] not in ("-h", "--help"):
        argv += ["--include_path", str(Path(__file__).resolve().parent)]
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
