"""Benchmark (issue 8): math answers graded per second, process pool vs one process; code
samples graded per second, sandboxed grading pool vs one sequential sandbox.

Math (`--part math`):

Both sides grade the same items with the same job (`eval.math.grade_pair`: math-verify
with our rules plus the second grader). The baseline calls it in this process, one
item after another, with no timeout protection; OmniOPD's `MathGrader` sends them to
`--workers` processes of `eval.pool.TimeoutPool` (external per-item timeout). Each side
is warmed up on a separate set of items first (math-verify builds its parser on first
use) and measured on items it has never seen (math-verify caches parses).

    .venv/bin/python scripts/bench/eval.py --part math --items 1000 --workers 2

Goal (issue 8): >= 1.5x items/s with the pool on 2 cores.

Code (`--part code`): the same model responses to stdin problems (several tests each;
correct, wrong-answer and crashing solutions, as an evaluation sees them) graded by
`eval.code.CodeGrader` with `--workers` sandbox slots, against the baseline of one
sandbox slot grading the samples one after another (`grade_code` in a loop). Both sides
start one fresh bubblewrap sandbox per sample and judge every output on the host.

    .venv/bin/python scripts/bench/eval.py --part code --code-samples 200 --workers 2
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

# This file is named eval.py: drop its own directory from the path so `eval` is the
# repository's package, not this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parents[1]))


def make_items(n: int, seed: int) -> tuple[list[str], list[str]]:
    """`n` distinct (gold, response) pairs in the shapes MATH-500/AIME answers take,
    about half of them correct."""
    rng = random.Random(seed)
    golds, responses = [], []
    for i in range(n):
        a, b = rng.randint(2, 999) + i, rng.randint(2, 97)
        right = rng.random() < 0.5
        shape = i % 7
        if shape == 0:
            gold, pred = str(a * 7 + 3), str(a * 7 + 3 if right else a * 7 + 4)
        elif shape == 1:
            gold, pred = f"\\frac{{{a}}}{{{b}}}", f"\\frac{{{2 * a}}}{{{2 * b}}}" if right else f"\\frac{{{a + 1}}}{{{b}}}"
        elif shape == 2:
            gold, pred = f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}" if right else f"{a}\\sqrt{{{b + 1}}}"
        elif shape == 3:
            gold, pred = f"(x+{a})^2", f"x^2+{2 * a}x+{a * a}" if right else f"x^2+{a}x+{a * a}"
        elif shape == 4:
            gold, pred = f"({a},{a + b})", f"{a}<x<{a + b}" if right else f"{a}\\le x<{a + b}"
        elif shape == 5:
            gold, pred = f"\\{{{a},{a + b}\\}}", f"{a + b}, {a}" if right else f"{a}, {a + b + 1}"
        else:
            gold, pred = f"{a}\\%", f"{a / 100}" if right else f"{a / 10}"
        golds.append(gold)
        responses.append(f"Let me work through this carefully.\nSo the value is ${pred}$.\nAnswer: ${pred}$")
    return golds, responses


def in_process(golds: list[str], responses: list[str]) -> list[bool]:
    from eval.math import extract_answer, grade_pair

    return [grade_pair((g, extract_answer(r), True))[0] for g, r in zip(golds, responses, strict=True)]


def machine_state() -> str:
    """Load average and CPU pressure (PSI), so a recorded number says how busy the box was."""
    state = f"load {os.getloadavg()[0]:.1f}"
    try:
        some = Path("/proc/pressure/cpu").read_text().split()
        state += f", CPU pressure {some[2].split('=')[1]}% (avg60)"
    except (OSError, IndexError):
        pass
    return state


CODE_PROBLEM = "Read n and then n integers; print their sum and their maximum."
CODE_RESPONSES = (
    "Sum and max.\n```python\nn = int(input())\nxs = list(map(int, input().split()))\nprint(sum(xs), max(xs))\n```",
    "```python\nimport sys\ndata = sys.stdin.read().split()\nxs = list(map(int, data[1:]))\nprint(sum(xs), max(xs))\n```",
    "```python\nn = int(input())\nxs = list(map(int, input().split()))\nprint(sum(xs), min(xs))\n```",  # wrong
    "```python\nn = int(input())\nxs = input().split()\nprint(sum(xs))\n```",  # TypeError
)


def make_code_pairs(n: int, tests: int, seed: int) -> list:
    """`n` (CodeItem, response) samples: n/4 problems x 4 responses, `tests` tests each."""
    from eval.datasets import CodeItem, CodeTests

    rng = random.Random(seed)
    pairs = []
    for p in range((n + 3) // 4):
        inputs, outputs = [], []
        for _ in range(tests):
            xs = [rng.randint(-1000, 1000) for _ in range(rng.randint(1, 50))]
            inputs.append(f"{len(xs)}\n{' '.join(map(str, xs))}\n")
            outputs.append(f"{sum(xs)} {max(xs)}\n")
        item = CodeItem(f"p{p}", CODE_PROBLEM, CodeTests(tuple(inputs), tuple(outputs)), time_limit_s=2.0)
        pairs += [(item, r) for r in CODE_RESPONSES]
    return pairs[:n]


def bench_code(a: argparse.Namespace) -> None:
    from eval.code import CodeGrader, benchmark_verdict, extract_code, grade_code
    from eval.sandbox import Limits, acquire_slot

    pairs = make_code_pairs(a.code_samples, a.code_tests, a.seed)
    warm = make_code_pairs(8, a.code_tests, a.seed + 1)
    limits = Limits(time_s=2.0)

    def sequential(chunk: list, slot) -> list:
        out = []
        for item, response in chunk:
            program = extract_code(response)
            verdict = grade_code(response, item.tests.to_dict(), slot=slot, limits=limits, benchmark="apps")
            out.append(benchmark_verdict(verdict, program and program.source))
        return out

    bounds = [round(i * len(pairs) / a.rounds) for i in range(a.rounds + 1)]
    base, pool = [], []
    t_base = t_pool = 0.0
    before = machine_state()
    slot = acquire_slot()
    try:
        with CodeGrader(workers=a.workers, benchmark="apps") as grader:
            sequential(warm, slot)
            grader.grade(warm)
            for r in range(a.rounds):
                chunk = pairs[bounds[r] : bounds[r + 1]]
                for side in (("base", "pool") if r % 2 == 0 else ("pool", "base")):
                    start = time.perf_counter()
                    if side == "base":
                        base += sequential(chunk, slot)
                        t_base += time.perf_counter() - start
                    else:
                        pool += grader.grade(chunk)
                        t_pool += time.perf_counter() - start
    finally:
        slot.release()
    same = sum(x.reason == y.reason for x, y in zip(base, pool, strict=True))
    n = len(pairs)
    print(f"code grading: {n} samples ({n // 4} problems x 4 responses, {a.code_tests} tests each), "
          f"{sum(v.correct for v in pool)} pass, {os.cpu_count()} CPUs")
    print(f"machine: before {before}; after {machine_state()}")
    print(f"{'mode':<44}{'seconds':>10}{'samples/s':>11}")
    print(f"{'one sandbox slot, sequential':<44}{t_base:>10.2f}{n / t_base:>11.1f}")
    print(f"{f'CodeGrader, {a.workers} slots':<44}{t_pool:>10.2f}{n / t_pool:>11.1f}")
    print(f"ratio pool/sequential: {t_base / t_pool:.2f}x; verdict reasons identical: {same}/{n}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("math", "code", "all"), default="all", help="which benchmark to run")
    p.add_argument("--code-samples", type=int, default=200, help="code samples per side")
    p.add_argument("--code-tests", type=int, default=5, help="tests per code problem")
    p.add_argument("--items", type=int, default=1000, help="measured items per side")
    p.add_argument("--warmup", type=int, default=50, help="items graded before timing (not counted)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="pool processes")
    p.add_argument("--timeout", type=float, default=10.0, help="per-item timeout of the pool, s")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds the items are split into")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.part in ("math", "all"):
        bench_math(a)
    if a.part in ("code", "all"):
        bench_code(a)


def bench_math(a: argparse.Namespace) -> None:
    from eval.math import MathGrader

    warm_g, warm_r = make_items(a.warmup, a.seed + 1)
    golds, responses = make_items(a.items, a.seed)
    # Rounds alternate which side goes first (ABBA), so a change in machine load during
    # the run (other jobs on a shared box) hits both sides alike.
    bounds = [round(i * a.items / a.rounds) for i in range(a.rounds + 1)]
    baseline: list[bool] = []
    verdicts = []
    t_base = t_pool = 0.0
    before = machine_state()
    in_process(warm_g, warm_r)
    start = time.perf_counter()
    with MathGrader(workers=a.workers, timeout_s=a.timeout) as grader:
        grader.grade_answers(warm_g, warm_r)
        t_start = time.perf_counter() - start
        for r in range(a.rounds):
            g, resp = golds[bounds[r] : bounds[r + 1]], responses[bounds[r] : bounds[r + 1]]
            for side in (("base", "pool") if r % 2 == 0 else ("pool", "base")):
                start = time.perf_counter()
                if side == "base":
                    baseline += in_process(g, resp)
                    t_base += time.perf_counter() - start
                else:
                    verdicts += grader.grade_answers(g, resp)
                    t_pool += time.perf_counter() - start
        timeouts = grader.pool.timeouts

    pool_correct = [v.correct for v in verdicts]
    agree = sum(x == y for x, y in zip(baseline, pool_correct, strict=True))
    rate_base, rate_pool = a.items / t_base, a.items / t_pool
    rate_cold = a.items / (t_pool + t_start)
    print(f"math grading: {a.items} items, {sum(baseline)} correct, {os.cpu_count()} CPUs")
    print(f"machine: before {before}; after {machine_state()}")
    print(f"{'mode':<44}{'seconds':>10}{'items/s':>10}")
    print(f"{'one process (in-process, no timeout)':<44}{t_base:>10.2f}{rate_base:>10.1f}")
    print(f"{f'pool, {a.workers} workers (warm)':<44}{t_pool:>10.2f}{rate_pool:>10.1f}")
    print(f"{f'pool, {a.workers} workers (incl. start + warm-up)':<44}{t_pool + t_start:>10.2f}{rate_cold:>10.1f}")
    print(f"ratio pool/one process: {rate_pool / rate_base:.2f}x warm, {rate_cold / rate_base:.2f}x incl. start (goal >= 1.5x)")
    print(f"verdicts identical: {agree}/{a.items}; timeouts: {timeouts}")


if __name__ == "__main__":
    main()
