"""Pass@k against the Codex paper's formula; bootstrap intervals; benchmark scores."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.passk import (
    average_score,
    bootstrap_ci,
    item_scores,
    paired_difference,
    pass_at_k,
    score_benchmark,
)
from eval.results import BenchmarkScore, SampleResult, sample_seed


def naive_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Chen et al. (2021), Eq. 1: 1 - C(n-c, k) / C(n, k), in exact integers."""
    return 1 - Fraction(comb(n - c, k), comb(n, k))


@st.composite
def counts(draw):
    n = draw(st.integers(1, 200))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@settings(max_examples=300, deadline=None)
@given(counts())
def test_stable_pass_at_k_equals_the_exact_combinatorial_formula(nck: tuple[int, int, int]) -> None:
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(float(naive_pass_at_k(n, c, k)), abs=1e-12)


def test_pass_at_1_is_the_fraction_correct_and_edge_cases_hold() -> None:
    assert pass_at_k(16, 5, 1) == pytest.approx(5 / 16)
    assert pass_at_k(16, 0, 8) == 0.0
    assert pass_at_k(16, 16, 1) == 1.0
    assert pass_at_k(16, 10, 8) == 1.0  # n - c < k: every 8-subset holds a correct one
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 2, 5)


def samples(benchmark: str, per_item: dict[str, list[bool]]) -> list[SampleResult]:
    return [
        SampleResult(benchmark, item, i, sample_seed(0, item, i), "r", "x", ok, "correct" if ok else "wrong", 0.01)
        for item, oks in per_item.items()
        for i, ok in enumerate(oks)
    ]


def test_benchmark_score_averages_pass_at_1_over_k_samples_per_item() -> None:
    score = score_benchmark("aime24", samples("aime24", {"a": [True, False, False, False], "b": [True] * 4, "c": [False] * 4}), ks=(1, 2, 4, 8))
    assert score.pass_at_1 == pytest.approx((0.25 + 1 + 0) / 3)
    assert score.samples_per_item == 4 and score.n_items == 3
    assert set(score.pass_at_k) == {1, 2, 4}  # 8 > 4 samples: no unbiased estimate
    assert score.pass_at_k[4] == pytest.approx((1 + 1 + 0) / 3)
    assert score.ci_low <= score.pass_at_1 <= score.ci_high
    assert BenchmarkScore.from_dict(score.to_dict()) == score


def test_a_sample_graded_twice_is_refused() -> None:
    dup = samples("x", {"a": [True]}) * 2
    with pytest.raises(ValueError, match="graded twice"):
        item_scores(dup)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=60), st.integers(0, 2**31 - 1))
def test_bootstrap_interval_contains_the_point_estimate(values: list[float], seed: int) -> None:
    low, high = bootstrap_ci(values, n_boot=200, seed=seed)
    assert low <= float(np.mean(values)) <= high


def test_bootstrap_interval_shrinks_with_more_items_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    few, many = rng.random(20) < 0.5, rng.random(2000) < 0.5
    w_few = np.subtract(*bootstrap_ci(few, seed=1)[::-1])
    w_many = np.subtract(*bootstrap_ci(many, seed=1)[::-1])
    assert w_many < w_few / 4  # ~ 1/sqrt(100) of the width
    assert bootstrap_ci(few, seed=3) == bootstrap_ci(few, seed=3)


def test_average_is_the_unweighted_mean_of_benchmarks_with_an_interval() -> None:
    a = score_benchmark("math500", samples("math500", {f"i{j}": [j % 2 == 0] * 2 for j in range(40)}))
    b = score_benchmark("aime24", samples("aime24", {f"i{j}": [j % 4 == 0] * 2 for j in range(8)}))
    avg = average_score([a, b])
    assert avg.value == pytest.approx((0.5 + 0.25) / 2)
    assert avg.ci_low <= avg.value <= avg.ci_high and avg.n_items == 48


def test_paired_difference_uses_shared_items_only() -> None:
    a = score_benchmark("x", samples("x", {"p": [False, False], "q": [True, False], "r": [True, True]}))
    b = score_benchmark("x", samples("x", {"p": [True, True], "q": [True, True], "s": [False, False]}))
    diff = paired_difference(a, b)
    assert diff.n_items == 2
    assert diff.value == pytest.approx(((1 - 0) + (1 - 0.5)) / 2)
    assert diff.ci_low <= diff.value <= diff.ci_high


def test_sample_seeds_differ_across_samples_and_items_and_are_stable() -> None:
    seeds = {sample_seed(7, item, k) for item in ("a", "b") for k in range(16)}
    assert len(seeds) == 32
    assert sample_seed(7, "a", 3) == sample_seed(7, "a", 3)
    assert all(0 <= s < 2**31 for s in seeds)
