"""Pass@k metrics and bootstrap intervals (paper §5.1: Pass@1 averaged over 16 samples).

- `pass_at_k(n, c, k)`: the unbiased estimator of Chen et al. (2021, "Evaluating Large
  Language Models Trained on Code"), 1 - C(n-c, k) / C(n, k), computed in the stable
  product form 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials.
- `score_benchmark`: per-item (n, c) from graded samples -> `BenchmarkScore` with Pass@1
  (= mean over items of c/n, the same as pass_at_k with k=1), pass@k for requested k,
  and a percentile bootstrap interval over items (items are the unit of resampling:
  the k samples of one item are not independent evidence about the benchmark).
- `average_score`: the unweighted mean over benchmarks (the "Average" column of the
  paper's Tables 1-2) with an interval from resampling items within each benchmark.
- `paired_difference`: B - A on the items both evaluated, with a paired bootstrap
  interval (for comparing two checkpoints on the same items).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from eval.results import BenchmarkScore, ItemScore, SampleResult


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one item with `c` correct among `n` samples (Chen et al. 2021)."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset contains a correct sample
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def item_scores(samples: Iterable[SampleResult]) -> list[ItemScore]:
    """Group graded samples by item: (n, c) per item, in first-seen item order.

    Raises if one (item, sample_index) appears twice: a duplicated sample would be
    counted twice and bias Pass@1.
    """
    seen: set[tuple[str, int]] = set()
    n: dict[str, int] = defaultdict(int)
    c: dict[str, int] = defaultdict(int)
    for s in samples:
        key = (s.item_id, s.sample_index)
        if key in seen:
            raise ValueError(f"sample {s.sample_index} of item {s.item_id!r} was graded twice")
        seen.add(key)
        n[s.item_id] += 1
        c[s.item_id] += int(s.correct)
    return [ItemScore(item_id=i, n=n[i], c=c[i]) for i in n]


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling them, seeded)."""
    x = np.asarray(values, dtype=np.float64)  # [I]
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    means = _bootstrap_means(x, n_boot, np.random.default_rng(seed))  # [n_boot]
    return _interval(means, float(x.mean()), confidence)


def score_benchmark(
    benchmark: str,
    samples: Iterable[SampleResult],
    *,
    ks: Sequence[int] = (1,),
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> BenchmarkScore:
    """Reduce one benchmark's graded samples to Pass@1 with a bootstrap interval.

    `ks` larger than the smallest number of samples per item are left out of
    `pass_at_k` (the unbiased estimator needs k <= n).
    """
    return score_items(benchmark, item_scores(samples), ks=ks, confidence=confidence, n_boot=n_boot, seed=seed)


def score_items(
    benchmark: str,
    items: Sequence[ItemScore],
    *,
    ks: Sequence[int] = (1,),
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> BenchmarkScore:
    """`score_benchmark` from per-item (n, c) counts (e.g. counted in the store)."""
    if not items:
        raise ValueError(f"no graded samples for benchmark {benchmark!r}")
    rates = [it.c / it.n for it in items]
    low, high = bootstrap_ci(rates, confidence=confidence, n_boot=n_boot, seed=seed)
    n_min = min(it.n for it in items)
    pass_k = {
        k: float(np.mean([pass_at_k(it.n, it.c, k) for it in items]))
        for k in sorted(set(ks) | {1})
        if k <= n_min
    }
    return BenchmarkScore(
        benchmark=benchmark,
        n_items=len(items),
        samples_per_item=n_min,
        pass_at_1=float(np.mean(rates)),
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        pass_at_k=pass_k,
        items=tuple(items),
    )


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval (fractions; ci_low <= value <= ci_high)."""

    value: float
    ci_low: float
    ci_high: float
    n_items: int


def average_score(
    scores: Sequence[BenchmarkScore], *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> Estimate:
    """Unweighted mean of Pass@1 over benchmarks; each bootstrap draw resamples every
    benchmark's items independently, then averages the benchmark means."""
    if not scores:
        raise ValueError("average_score needs at least one benchmark")
    rng = np.random.default_rng(seed)
    draws = np.zeros(n_boot)  # [n_boot]
    for s in scores:
        draws += _bootstrap_means(_rates(s), n_boot, rng)
    draws /= len(scores)
    value = float(np.mean([s.pass_at_1 for s in scores]))
    low, high = _interval(draws, value, confidence)
    return Estimate(value, low, high, sum(s.n_items for s in scores))


def paired_difference(
    a: BenchmarkScore, b: BenchmarkScore, *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> Estimate:
    """Pass@1 of `b` minus `a` on the items both contain, with a paired bootstrap interval."""
    rate_a = {it.item_id: it.c / it.n for it in a.items}
    rate_b = {it.item_id: it.c / it.n for it in b.items}
    common = [i for i in rate_a if i in rate_b]
    if not common:
        raise ValueError(f"{a.benchmark}: the two evaluations share no items")
    diff = np.array([rate_b[i] - rate_a[i] for i in common])  # [I]
    means = _bootstrap_means(diff, n_boot, np.random.default_rng(seed))
    low, high = _interval(means, float(diff.mean()), confidence)
    return Estimate(float(diff.mean()), low, high, len(common))


def _rates(score: BenchmarkScore) -> np.ndarray:
    return np.array([it.c / it.n for it in score.items], dtype=np.float64)  # [I]


def _bootstrap_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, x.size, size=(n_boot, x.size))  # [n_boot, I]
    return x[idx].mean(axis=1)  # [n_boot]


def _interval(means: np.ndarray, point: float, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    # Percentile intervals of a skewed statistic can exclude the point estimate by a
    # hair (e.g. all items at 0 but one); widen to include it so tables never show a
    # value outside its own interval.
    return float(min(low, point)), float(max(high, point))
