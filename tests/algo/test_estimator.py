"""Eq. 3-5, 10 and Theorems 4.1 (b, c) and 4.2, checked by hand and by Monte Carlo."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from omniopd.algo.chunks import layout_from_spans
from omniopd.algo.estimator import (
    bayesian_proxy,
    bayesian_proxy_convex,
    chunk_prior,
    chunk_prior_from_logprobs,
    chunk_priors,
    estimate_proxies,
    frequentist_proxy,
    hoeffding_bound,
    k_sem,
    proxy_lower_bound,
    proxy_mse,
)
from omniopd.algo.similarity import PhiRangeError


def test_hand_computed_k_sem_prior_and_proxy():
    scores = torch.tensor([[0.2, 0.5, 1.0]], dtype=torch.float64)
    assert k_sem(scores).tolist() == pytest.approx([1.7])
    prior = chunk_prior(torch.tensor([math.log(0.5), math.log(0.125)]))  # sqrt(0.5 * 0.125)
    assert prior.item() == pytest.approx(0.25)
    assert chunk_prior_from_logprobs([math.log(0.5), math.log(0.125)]) == pytest.approx(0.25)
    assert bayesian_proxy(1.7, 3, 1.0, 0.25) == pytest.approx((1.7 + 0.25) / 4)
    assert bayesian_proxy_convex(1.7 / 3, 3, 1.0, 0.25) == pytest.approx((1.7 + 0.25) / 4)
    assert frequentist_proxy(1.7, 3) == pytest.approx(1.7 / 3)
    est = estimate_proxies(scores, torch.tensor([0.25], dtype=torch.float64), alpha=1.0)
    assert est.proxy.tolist() == pytest.approx([0.4875]) and est.n == 3
    assert est.frequentist.tolist() == pytest.approx([1.7 / 3])


def test_alpha_zero_is_the_frequentist_ratio():
    assert bayesian_proxy(
        torch.tensor([0.0, 4.0]), 10, 0.0, torch.tensor([0.9, 0.9])
    ).tolist() == pytest.approx([0.0, 0.4])
    with pytest.raises(ValueError, match="alpha"):
        bayesian_proxy(1.0, 10, -1.0, 0.5)
    with pytest.raises(ValueError, match="N = 0"):
        bayesian_proxy(0.0, 0, 0.0, 0.5)


def test_masked_prior_uses_each_chunks_own_length():
    logprobs = torch.tensor([[math.log(0.5), math.log(0.5), 0.0], [math.log(0.2), -99.0, -99.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert chunk_prior(logprobs, mask).tolist() == pytest.approx([0.5, 0.2])


def test_chunk_priors_of_a_batch_layout():
    layout = layout_from_spans([[(0, 2), (3, 4)], [(1, 4)]], lengths=[4, 4], seq_len=4)
    lp = torch.log(torch.tensor([[0.5, 0.125, 0.9, 0.3], [0.9, 0.1, 0.1, 0.1]]))
    priors = chunk_priors(lp, layout.chunk_index, layout.num_chunks)
    assert priors.tolist() == pytest.approx([0.25, 0.3, 0.1], rel=1e-6)


def test_phi_scores_outside_unit_interval_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        k_sem(torch.tensor([[0.5, 1.2]]))
    with pytest.raises(PhiRangeError, match=r"phi 'bleu2' gave -0\.25"):
        k_sem(torch.tensor([0.5, -0.25]), phi="bleu2")


def test_k_sem_clips_float_rounding_beyond_the_unit_interval():
    scores = torch.tensor([1.0000002, 0.5, -1e-9], dtype=torch.float64)  # float32 cosine noise
    assert k_sem(scores, phi="embedding").item() == 1.5


@settings(max_examples=300, deadline=None)
@given(
    scores=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20),
    alpha=st.one_of(st.just(0.0), st.floats(1e-6, 10.0)),
    prior=st.floats(1e-12, 1.0),
)
def test_proxy_in_unit_interval_and_above_the_theorem_4_1b_floor(scores, alpha, prior):
    n = len(scores)
    k = math.fsum(scores)
    proxy = bayesian_proxy(k, n, alpha, prior)
    assert 0.0 <= proxy <= 1.0 + 1e-12
    assert proxy >= proxy_lower_bound(n, alpha, prior) - 1e-15
    assert proxy == pytest.approx(bayesian_proxy_convex(k / n, n, alpha, prior), abs=1e-12)
    if alpha > 0:
        # no teacher continuation matches at all: the Bayesian proxy stays positive (Eq. 12)
        floor = bayesian_proxy(0.0, n, alpha, prior)
        assert floor == pytest.approx(alpha * prior / (n + alpha)) and floor > 0
    assert frequentist_proxy(0.0, n) == 0.0  # ... while the frequentist one collapses


def _mc_scores(rng, draws, n, kind):
    if kind == "beta":  # Beta(2, 5): mu = 2/7, sigma^2 = 10 / (49 * 8)
        return rng.beta(2.0, 5.0, size=(draws, n)), 2 / 7, 10 / (49 * 8)
    return rng.integers(0, 2, size=(draws, n)).astype(float), 0.5, 0.25  # Bernoulli(1/2)


@pytest.mark.parametrize("kind", ["beta", "bernoulli"])
def test_variance_contracts_by_n_over_n_plus_alpha_squared_and_mse_decomposes(kind):
    """Theorem 4.1c: Var(proxy) = (N/(N+a))^2 Var(freq); MSE = Eq. 13."""
    rng = np.random.default_rng(0)
    n, alpha, prior, draws = 10, 1.0, 0.3, 200_000
    scores, mu, sigma2 = _mc_scores(rng, draws, n, kind)
    freq = scores.sum(axis=1) / n
    proxy = bayesian_proxy(scores.sum(axis=1), n, alpha, prior)
    assert proxy.var() / freq.var() == pytest.approx((n / (n + alpha)) ** 2, rel=1e-9)
    assert freq.var() == pytest.approx(sigma2 / n, rel=0.02)
    mse = ((proxy - mu) ** 2).mean()
    assert mse == pytest.approx(proxy_mse(n, alpha, sigma2, mu, prior), rel=0.02)
    assert mse < ((freq - mu) ** 2).mean()  # here the shrinkage pays for its bias


def test_hoeffding_bound_of_theorem_4_2_holds_by_monte_carlo():
    rng = np.random.default_rng(1)
    n, alpha, prior, draws = 10, 1.0, 0.2, 200_000
    scores, mu, _ = _mc_scores(rng, draws, n, "bernoulli")  # the largest variance phi allows
    proxy = bayesian_proxy(scores.sum(axis=1), n, alpha, prior)
    shrunk = n / (n + alpha) * mu + alpha / (n + alpha) * prior
    for eps in (0.05, 0.1, 0.2, 0.3, 0.4):
        rate = np.mean(np.abs(proxy - shrunk) >= eps)
        stderr = math.sqrt(max(rate * (1 - rate), 1 / draws) / draws)
        assert rate <= hoeffding_bound(n, alpha, eps) + 4 * stderr, eps
    assert proxy.var() <= n / (4 * (n + alpha) ** 2)  # the variance bound behind Eq. 15
