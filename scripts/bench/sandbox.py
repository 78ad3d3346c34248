"""Benchmark: isolated code execution vs plain subprocess.run on the same programs.

Measures, per worker (one thread, sequential), in the same run:
  programs/s  each program in a fresh sandbox (eval.sandbox.run_program) vs
              `subprocess.run([python3, "-I", "-S", file])` with no isolation at all
              (the interpreter flags the sandbox's runner uses: isolated mode, no
              site import, so both sides start the same interpreter the same way);
  tests/s     one sample's tests sharing one sandbox (fork per test) vs one
              `subprocess.run` per test.
Goals (issue 7): sandboxed programs/s >= 0.5x plain; >= 300 tests/s in one sandbox.

    python scripts/bench/sandbox.py                 # defaults: 60 programs, 600 tests
    python scripts/bench/sandbox.py --programs 100 --tests 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eval.sandbox import Limits, Sandbox, run_program, sandbox_python

# Small programs of the kind graders run: read stdin, compute a little, print.
PROGRAMS = [
    "a, b = map(int, input().split())\nprint(a + b)\n",
    "import sys\nxs = list(map(int, sys.stdin.read().split()))\nprint(sum(xs), max(xs))\n",
    "n = int(input())\nprint(sum(i * i for i in range(n * 100)))\n",
    "from collections import Counter\ns = input()\nprint(Counter(s).most_common(1)[0][0])\n",
    "import math\nr = float(input())\nprint('%.6f' % (math.pi * r * r))\n",
]
# The runner inside the sandbox starts as `python -I -S`; the baseline gets the same flags
# (without them it also runs site.py, a slower start that flattered the ratio).
PLAIN_FLAGS = ("-I", "-S")
INPUTS = [b"3 4\n", b"5 1 9 2\n", b"7\n", b"abracadabra\n", b"2.5\n"]


def _cpu_s() -> float:
    """CPU seconds of this process and its reaped descendants (load-insensitive cost)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measured(fn, n: int, *args) -> tuple[float, float]:
    """(items per wall second, CPU milliseconds per item) of fn(*args, n)."""
    cpu, start = _cpu_s(), time.perf_counter()
    fn(*args, n)
    wall = time.perf_counter() - start
    return n / wall, (_cpu_s() - cpu) / n * 1000


def plain_programs(python: str, files: list[str], n: int) -> None:
    for i in range(n):
        k = i % len(files)
        done = subprocess.run([python, *PLAIN_FLAGS, files[k]], input=INPUTS[k], capture_output=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr


def sandboxed_programs(limits: Limits, n: int) -> None:
    for i in range(n):
        k = i % len(PROGRAMS)
        _, result = run_program(PROGRAMS[k], stdin=INPUTS[k], limits=limits)
        assert result is not None and result.status == "ok", result


def plain_tests(python: str, file: str, n: int) -> None:
    for i in range(n):
        subprocess.run([python, *PLAIN_FLAGS, file], input=f"{i} {i}\n".encode(), capture_output=True, timeout=30, check=True)


def sandboxed_tests(limits: Limits, n: int) -> None:
    # Includes starting the sandbox and closing it.
    with Sandbox(PROGRAMS[0], limits=limits) as box:  # as grading runs them: pipelined
        for i, result in enumerate(box.run_many(f"{i} {i}\n".encode() for i in range(n))):
            assert result.stdout == f"{2 * i}\n".encode(), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=60, help="programs per measurement (default 60)")
    parser.add_argument("--tests", type=int, default=600, help="tests per measurement (default 600)")
    parser.add_argument("--plain-tests", type=int, default=100, help="tests for the slower plain baseline (default 100)")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved repetitions; medians are reported (default 5)")
    args = parser.parse_args()

    python = sandbox_python()
    limits = Limits(time_s=4, memory_mb=512)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, source in enumerate(PROGRAMS):
            path = os.path.join(tmp, f"p{i}.py")
            Path(path).write_text(source)
            files.append(path)
        sandboxed_programs(limits, 3)  # warm-up: the runner's bytecode, page cache
        rows: dict[str, list[float]] = {k: [] for k in ("plain_prog", "box_prog", "plain_test", "box_test")}
        cpu: dict[str, list[float]] = {k: [] for k in rows}
        loads = []
        for _ in range(args.repeat):  # interleaved, so machine load hits both sides alike
            loads.append(os.getloadavg()[0])
            for key, (rate, ms) in {
                "plain_prog": measured(plain_programs, args.programs, python, files),
                "box_prog": measured(sandboxed_programs, args.programs, limits),
                "plain_test": measured(plain_tests, args.plain_tests, python, files[0]),
                "box_test": measured(sandboxed_tests, args.tests, limits),
            }.items():
                rows[key].append(rate)
                cpu[key].append(ms)
    # Each repetition measures both sides back to back; the median of the per-repetition
    # numbers (and ratios) is reported, so a burst of load elsewhere does not decide it.
    med = {k: statistics.median(v) for k, v in rows.items()}
    ratio = statistics.median(b / p for b, p in zip(rows["box_prog"], rows["plain_prog"], strict=True))
    test_ratio = statistics.median(b / p for b, p in zip(rows["box_test"], rows["plain_test"], strict=True))
    print(f"machine: {os.cpu_count()} CPUs, load average during runs {min(loads):.1f}-{max(loads):.1f}; {python}")
    print(f"{'median of ' + str(args.repeat) + ' repetitions':44s} {'plain':>10s} {'sandboxed':>10s} {'ratio':>7s} {'goal':>12s}")
    print(f"{'single programs, programs/s per worker':44s} {med['plain_prog']:10.1f} {med['box_prog']:10.1f} {ratio:7.2f} {'>= 0.50x':>12s}")
    print(f"{'one sample, tests/s per worker':44s} {med['plain_test']:10.1f} {med['box_test']:10.1f} {test_ratio:7.2f} {'>= 300/s':>12s}")
    mcpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(
        f"CPU ms per item (this process + children, insensitive to other load): programs plain "
        f"{mcpu['plain_prog']:.1f} / sandboxed {mcpu['box_prog']:.1f} (ratio {mcpu['plain_prog'] / mcpu['box_prog']:.2f}); "
        f"tests plain {mcpu['plain_test']:.1f} / sandboxed {mcpu['box_test']:.2f}"
    )
    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"

    print("programs ratio per repetition, median [min, max]:", spread([b / p for b, p in zip(rows["box_prog"], rows["plain_prog"], strict=True)]))
    print("tests/s per repetition, median [min, max]:", spread(rows["box_test"]))
    print("all runs (items/s):", {k: [round(x, 1) for x in v] for k, v in rows.items()})
    verdict = "MET" if ratio >= 0.5 and med["box_test"] >= 300 else "NOT MET"
    print(f"goals {verdict}: programs ratio {ratio:.2f} (>= 0.5), tests/s {med['box_test']:.0f} (>= 300)")


if __name__ == "__main__":
    main()
