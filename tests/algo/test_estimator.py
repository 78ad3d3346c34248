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


# ------------------------------------------------------------------ Monte Carlo checks
#
# Each random check below is a one-sided (or two-sided) test whose false-failure rate,
# were the seed drawn at random, is stated: a correct implementation fails it with at most
# that probability. Seeds are fixed so CI is deterministic, but no assertion depends on
# the seed chosen (scripts of this kind pass on any seed, up to the stated rate).

Z_1E6 = 4.753  # one-sided standard-normal quantile: P(Z > 4.753) = 1e-6


def _variance_exceeds(samples, bound, z=Z_1E6):
    """True when the sample variance is significantly above `bound` (one-sided test of
    H0: Var <= bound; the sample variance is asymptotically normal with standard error
    sqrt((mu_4 - sigma^4) / D), estimated from the sample; false-failure rate P(Z > z))."""
    d = samples - samples.mean()
    var = (d**2).mean()
    stderr = math.sqrt(max((d**4).mean() - var**2, 0.0) / samples.size)
    return var > bound + z * stderr


def _mean_differs(samples, value, z=5.0):
    """Two-sided z-test of E[samples] = value (false-failure rate P(|Z| > 5) = 5.7e-7)."""
    stderr = samples.std() / math.sqrt(samples.size)
    return abs(samples.mean() - value) > z * stderr


def _mc_scores(rng, draws, n, kind):
    if kind == "beta":  # Beta(2, 5): mu = 2/7, sigma^2 = 10 / (49 * 8)
        return rng.beta(2.0, 5.0, size=(draws, n)), 2 / 7, 10 / (49 * 8)
    return rng.integers(0, 2, size=(draws, n)).astype(float), 0.5, 0.25  # Bernoulli(1/2)


@pytest.mark.parametrize("kind", ["beta", "bernoulli"])
def test_variance_contracts_by_n_over_n_plus_alpha_squared_and_mse_decomposes(kind):
    """Theorem 4.1c: Var(proxy) = (N/(N+a))^2 Var(freq) (exact: the proxy is affine in the
    frequentist ratio); Var(freq) = sigma^2/N and MSE = Eq. 13 by two-sided z-tests, and
    the shrinkage lowers the MSE here by a paired one. False-failure rate <= 2e-6 in all."""
    rng = np.random.default_rng(0)
    n, alpha, prior, draws = 10, 1.0, 0.3, 200_000
    scores, mu, sigma2 = _mc_scores(rng, draws, n, kind)
    freq = scores.sum(axis=1) / n
    proxy = bayesian_proxy(scores.sum(axis=1), n, alpha, prior)
    assert proxy.var() / freq.var() == pytest.approx((n / (n + alpha)) ** 2, rel=1e-9)
    assert not _mean_differs((freq - mu) ** 2, sigma2 / n)  # E[(freq - mu)^2] = Var(freq) = sigma^2 / N
    assert not _mean_differs((proxy - mu) ** 2, proxy_mse(n, alpha, sigma2, mu, prior))  # Eq. 13
    gain = (freq - mu) ** 2 - (proxy - mu) ** 2  # paired: here the shrinkage pays for its bias
    assert gain.mean() > Z_1E6 * gain.std() / math.sqrt(draws)


def test_eq_13_check_detects_a_wrong_mse():
    """Power of the check above: an MSE off by 5% (the bias term dropped, or N for N + a)
    is rejected with the same draws."""
    rng = np.random.default_rng(0)
    n, alpha, prior, draws = 10, 1.0, 0.3, 200_000
    scores, mu, sigma2 = _mc_scores(rng, draws, n, "beta")
    proxy = bayesian_proxy(scores.sum(axis=1), n, alpha, prior)
    assert _mean_differs((proxy - mu) ** 2, n * sigma2 / n**2 + alpha**2 * (prior - mu) ** 2 / n**2)
    assert _mean_differs((proxy - mu) ** 2, sigma2 / n)  # the frequentist variance


def test_variance_bound_of_eq_15_is_a_real_test_at_the_largest_variance_phi_allows():
    """Theorem 4.2: Var(proxy) <= N / (4 (N + a)^2), which Bernoulli(1/2) scores meet with
    equality (sigma^2 = 1/4, Popoviciu). One-sided test of H0: Var <= bound, false-failure
    rate 1e-6 per check (normal approximation to the sample variance, D = 200,000). The
    same test rejects the frequentist ratio, whose variance 1/(4N) is above the bound."""
    rng = np.random.default_rng(2)
    for n, alpha in ((10, 1.0), (10, 5.0), (40, 2.0)):
        k = rng.binomial(n, 0.5, size=200_000).astype(float)
        bound = n / (4 * (n + alpha) ** 2)
        assert not _variance_exceeds(bayesian_proxy(k, n, alpha, 0.2), bound), (n, alpha)
        assert _variance_exceeds(frequentist_proxy(k, n), bound), (n, alpha)  # the test has power
        assert _variance_exceeds(bayesian_proxy(k, n, alpha / 2, 0.2), bound), (n, alpha)  # half the shrinkage


# (N, alpha, eps): every bound below is well under 1 (the check is not empty), eps <= 0.1
# included (N large enough that Eq. 14 says something there).
HOEFFDING_CASES = [(10, 1.0, 0.25), (10, 1.0, 0.3), (10, 5.0, 0.2), (40, 2.0, 0.15), (100, 1.0, 0.1),
                   (100, 10.0, 0.09), (400, 1.0, 0.05), (1000, 5.0, 0.04)]


def _exceedance_rate(rng, n, alpha, prior, p, eps, draws, *, estimator=bayesian_proxy):
    k = rng.binomial(n, p, size=draws).astype(float)  # k_sem of N Bernoulli(p) scores (phi in {0, 1})
    shrunk = n / (n + alpha) * p + alpha / (n + alpha) * prior
    return float(np.mean(np.abs(estimator(k, n, alpha, prior) - shrunk) >= eps))


def test_hoeffding_bound_of_eq_14_is_the_papers_formula_and_never_empty_in_the_checks():
    assert hoeffding_bound(100, 1.0, 0.1) == pytest.approx(2 * math.exp(-2 * 101**2 * 0.01 / 100))
    assert hoeffding_bound(10, 1.0, 0.05) == 1.0  # clipped: Eq. 14 says nothing at N = 10, eps = 0.05
    for n, alpha, eps in HOEFFDING_CASES:
        assert hoeffding_bound(n, alpha, eps) <= 0.45, (n, alpha, eps)


@pytest.mark.parametrize(("n", "alpha", "eps"), HOEFFDING_CASES)
@pytest.mark.parametrize("p", [0.5, 0.15])
def test_hoeffding_bound_of_theorem_4_2_holds_by_monte_carlo(n, alpha, eps, p):
    """Eq. 14 against the exceedance rate of D draws. The rate of D Bernoulli indicators
    exceeds its mean by t = sqrt(ln(1/delta) / (2D)) with probability <= delta (Hoeffding
    again), so failing when rate > bound + t has false-failure rate <= delta = 1e-7."""
    draws, delta = 200_000, 1e-7
    rate = _exceedance_rate(np.random.default_rng(n * 1000 + int(100 * eps)), n, alpha, 0.2, p, eps, draws)
    assert rate <= hoeffding_bound(n, alpha, eps) + math.sqrt(math.log(1 / delta) / (2 * draws))


def test_hoeffding_check_rejects_an_estimator_that_ignores_the_prior():
    """Power of the check above: the frequentist ratio (no shrinkage) is far from the shrunk
    target once alpha is large, and Eq. 14's rate with that alpha is exceeded by a wide margin."""
    n, alpha, eps, draws = 10, 10.0, 0.2, 200_000
    freq = lambda k, n, alpha, prior: frequentist_proxy(k, n)  # noqa: E731
    rate = _exceedance_rate(np.random.default_rng(3), n, alpha, 0.2, 0.5, eps, draws, estimator=freq)
    assert rate > hoeffding_bound(n, alpha, eps) + math.sqrt(math.log(1e7) / (2 * draws))
