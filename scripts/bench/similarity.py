"""phi throughput: one 50-token student chunk against N = 10 teacher continuations.

Measures, on the same inputs in the same run, OmniOPD's `phi_batch` for rouge1, rougeL and
edit against the strongest library call for each, used the way a user would call it:

- rouge1, rougeL: the `rouge-score` package (ROUGE-1 / ROUGE-L F1, no stemming), one
  `RougeScorer.score` per (student, continuation) pair: it has no batch API;
- edit: rapidfuzz's `Levenshtein.normalized_similarity` (C++), once per pair: the same
  library `phi_batch` uses, so this row measures only what batching (`cdist`) adds.

Timing is 1:1: every round calls ours once and the baseline once, alternating which goes
first, so both see the same background load and the same number of calls. A repeat is
`--rounds` rounds; the per-call time of a repeat is its median round, and the table gives
the median over `--repeats` repeats with [min, max]. The speed-up is computed per repeat
(both sides from the same rounds) and reported the same way. Values are compared with ==
(not approximately) on `--inputs` generated inputs of varying length, overlap and N.
Goal (issues 2 and 21): ROUGE-1 >= 20x rouge-score, identical values.

    .venv/bin/python scripts/bench/similarity.py [--n 10] [--words 50] [--rounds 200] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable

from rapidfuzz.distance import Levenshtein
from rouge_score.rouge_scorer import RougeScorer

from omniopd.algo.similarity import phi_batch, words

_WORDS = (
    "we so then the x y z is are equals plus minus times over let us factor solve check case "
    "root roots quadratic because therefore hence note that value sum product term terms first "
    "second step answer thus gives get substitute both sides divide multiply by and or not if"
)
VOCAB = _WORDS.split(" ")
SYMBOLS = ["=", "+", "-", "2", "3", "(x", "1)", "x^2", "4,", "0.", "\\frac{1}{2}", "Answer:"]
METRICS = (
    ("rouge1", "rouge-score ROUGE-1, per pair"),
    ("rougeL", "rouge-score ROUGE-L, per pair"),
    ("edit", "rapidfuzz Levenshtein, per pair"),
)


def make_inputs(n: int, n_words: int, seed: int) -> tuple[str, list[str]]:
    """A math-flavoured student chunk and N continuations that share part of its content."""
    rng = random.Random(seed)
    pool = VOCAB + SYMBOLS
    student = [rng.choice(pool) for _ in range(n_words)]
    continuations = []
    for _ in range(n):
        keep = rng.uniform(0.2, 0.9)  # how much of the student's wording a continuation reuses
        text = [w if rng.random() < keep else rng.choice(pool) for w in student]
        if rng.random() < 0.5:
            text = text[: rng.randint(n_words // 2, n_words)] + [
                rng.choice(pool) for _ in range(rng.randint(0, 10))
            ]
        continuations.append(" ".join(text))
    return " ".join(student), continuations


def baselines() -> dict[str, Callable[[str, list[str]], list[float]]]:
    """The baseline of each metric: one library call per (student, continuation) pair."""
    scorers = {name: RougeScorer([name], use_stemmer=False) for name in ("rouge1", "rougeL")}

    def rouge(metric: str) -> Callable[[str, list[str]], list[float]]:
        scorer = scorers[metric]

        def score(student: str, continuations: list[str]) -> list[float]:
            # rouge-score gives 0 where neither text has a token; phi says 1 (phi(a, a) = 1).
            if not words(student):
                return [0.0 if words(c) else 1.0 for c in continuations]
            return [scorer.score(c, student)[metric].fmeasure for c in continuations]

        return score

    def edit(student: str, continuations: list[str]) -> list[float]:
        return [Levenshtein.normalized_similarity(student, c) for c in continuations]

    return {"rouge1": rouge("rouge1"), "rougeL": rouge("rougeL"), "edit": edit}


def check_values(base: dict, n_inputs: int, seed: int) -> dict[str, int]:
    """How many of `n_inputs` generated inputs give values different from the baseline."""
    rng = random.Random(seed)
    mismatches = dict.fromkeys(base, 0)
    for i in range(n_inputs):
        student, continuations = make_inputs(rng.randint(1, 16), rng.randint(1, 120), seed + i)
        if i % 7 == 0:  # some unicode, punctuation-only and empty texts too
            continuations += ["", "?!", "Naïve İf a_b x²", student.upper()]
        for metric, fn in base.items():
            mismatches[metric] += phi_batch(metric, student, continuations) != fn(
                student, continuations
            )
    return mismatches


def time_pair(ours: Callable[[], object], base: Callable[[], object], rounds: int) -> dict[str, float]:
    """Median seconds per call of each side over `rounds` interleaved rounds (1:1), as wall
    time and as this thread's CPU time. CPU time leaves out the time the thread sat
    preempted, which on a loaded shared machine hits the longer (baseline) call more often."""
    times: dict[str, list[float]] = {"ours": [], "base": [], "ours_cpu": [], "base_cpu": []}
    for i in range(rounds):
        for fn, key in ((ours, "ours"), (base, "base")) if i % 2 else ((base, "base"), (ours, "ours")):
            cpu, start = time.thread_time(), time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
            times[key + "_cpu"].append(time.thread_time() - cpu)
    return {k: statistics.median(v) for k, v in times.items()}


def spread(values: list[float], scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    """'median [min, max]' of values * scale."""
    m, lo, hi = (statistics.median(values) * scale, min(values) * scale, max(values) * scale)
    return f"{fmt.format(m)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10, help="teacher continuations per chunk (N)")
    parser.add_argument(
        "--words", type=int, default=50, help="words in the student chunk (~ its tokens)"
    )
    parser.add_argument(
        "--rounds", type=int, default=200, help="interleaved calls of each side per repeat"
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="repeats; median [min, max] over them"
    )
    parser.add_argument(
        "--inputs", type=int, default=500, help="generated inputs whose values are compared"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    base = baselines()
    mismatches = check_values(base, args.inputs, args.seed + 1000)
    student, continuations = make_inputs(args.n, args.words, args.seed)
    calls = {
        metric: (
            lambda m=metric: phi_batch(m, student, continuations),
            lambda m=metric: base[m](student, continuations),
        )
        for metric, _ in METRICS
    }
    for ours, theirs in calls.values():  # warm-up: imports, caches
        ours(), theirs()
    per_repeat: dict[str, list[dict[str, float]]] = {m: [] for m, _ in METRICS}
    loads = []
    for _ in range(args.repeats):
        loads.append(os.getloadavg()[0])
        for metric, (ours, theirs) in calls.items():
            per_repeat[metric].append(time_pair(ours, theirs, args.rounds))

    print(
        f"one student chunk ({args.words} words, {len(student)} chars) vs N = {args.n} continuations; "
        f"{args.repeats} repeats x {args.rounds} rounds (1:1); load average {min(loads):.1f}-{max(loads):.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    print("median [min, max] over repeats of each repeat's median call; wall time, then this thread's CPU time")
    print(
        f"{'phi':<7} {'ours (us/call)':>22} {'baseline':<32} {'baseline (us/call)':>26} {'speed-up':>20} "
        f"{'CPU speed-up':>20}  values differ"
    )
    ratios = {}
    for metric, label in METRICS:
        runs = per_repeat[metric]
        wall = [r["base"] / r["ours"] for r in runs]
        cpu = [r["base_cpu"] / r["ours_cpu"] for r in runs]
        ratios[metric] = (statistics.median(wall), statistics.median(cpu))
        print(
            f"{metric:<7} {spread([r['ours'] for r in runs], 1e6):>22} {label:<32} "
            f"{spread([r['base'] for r in runs], 1e6):>26} {spread(wall, fmt='{:.1f}') + 'x':>20} "
            f"{spread(cpu, fmt='{:.1f}') + 'x':>20}  {mismatches[metric]} of {args.inputs} inputs"
        )
    wall, cpu = ratios["rouge1"]
    met = min(wall, cpu) >= 20 and not mismatches["rouge1"]
    print(
        f"goal ROUGE-1 >= 20x rouge-score with identical values: {wall:.1f}x wall, {cpu:.1f}x CPU, "
        f"{mismatches['rouge1']} inputs differ: {'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
