"""The teacher-preference estimators of a chunk (Eq. 3-5, 10, and Theorems 4.1-4.2).

    k_sem^(c)  = sum_{i=1..N} phi(y_c, y_teacher^(i))                               (Eq. 3)
    prior^(c)  = (prod_{t in c} pi_theta(y_t | x, y_<t))^(1/|c|) = exp(mean_{t in c} log pi)  (Eq. 4)
    proxy^(c)  = (k_sem + alpha * prior) / (N + alpha)                              (Eq. 5)
               = N/(N+alpha) * k_sem/N + alpha/(N+alpha) * prior                    (Eq. 10)

|c| is the chunk's actual length, so a chunk clipped at the end of a trajectory (or a merged
span) still gets a geometric mean, not a product with a wrong exponent. The prior is computed
from log-probabilities (exp of their mean), never as a product of probabilities, which would
underflow for C = 50. The proxy is a weight: it must be detached before it multiplies the
chunk log-likelihood (the loss does that).

Functions accept Python floats or tensors (any broadcastable shapes, e.g. [K] for K chunks).
alpha = 0 gives the frequentist ratio k_sem / N (ablation "w/o Bayesian smoothing").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from omniopd.algo.chunks import ChunkLayout
from omniopd.algo.similarity import check_phi
from omniopd.algo.sliced import LogitSource, token_stats

Number = float | Tensor


def k_sem(phi_scores: Tensor, *, phi: str = "the phi function") -> Tensor:
    """Eq. 3: sum of phi over the N teacher continuations. phi_scores: [..., N] in [0, 1] -> [...].

    The scores' range is checked like every phi value (`similarity.check_phi`, naming `phi`):
    float rounding beyond [0, 1] is clipped, anything further raises PhiRangeError."""
    if phi_scores.numel():
        check_phi((phi_scores.min().item(), phi_scores.max().item()), phi=phi)
        phi_scores = phi_scores.clamp(0.0, 1.0)  # only rounding within PHI_TOLERANCE is left to clip
    return phi_scores.sum(dim=-1)


def frequentist_proxy(k: Number, n: Number) -> Number:
    """The empirical ratio k_sem / N (unbiased for mu_c, Eq. 9; collapses to 0 when k_sem = 0)."""
    return k / n


def chunk_prior(logprobs: Tensor, mask: Tensor | None = None) -> Tensor:
    """Eq. 4: geometric mean of a chunk's token probabilities, exp(mean log pi).

    logprobs: [..., L] log pi_theta(y_t) of the chunk's tokens; mask: [..., L] bool, True at
    the tokens that belong to the chunk (for padded batches of chunks). Returns [...] in (0, 1].
    A chunk with no tokens gets prior 1 (the empty product).
    """
    if mask is None:
        mask = torch.ones_like(logprobs, dtype=torch.bool)
    total = (logprobs * mask).sum(dim=-1)
    count = mask.sum(dim=-1).clamp_min(1)
    return (total / count).exp()


def chunk_prior_from_logprobs(logprobs: Sequence[float]) -> float:
    """Eq. 4 for one chunk given as a list of token log-probabilities (plain floats)."""
    return math.exp(math.fsum(logprobs) / len(logprobs)) if logprobs else 1.0


def chunk_priors(token_logprobs: Tensor, chunk_index: Tensor, num_chunks: int) -> Tensor:
    """Eq. 4 for every chunk of a batch. token_logprobs, chunk_index: [B, T]; -> [K].

    chunk_index holds the chunk id (0..K-1, unique across the batch) at audited positions and
    -1 elsewhere; token_logprobs may hold anything at positions with chunk_index -1.
    """
    ids = chunk_index.reshape(-1)
    inside = ids >= 0
    lp = token_logprobs.reshape(-1)[inside].double()
    sums = torch.zeros(num_chunks, dtype=torch.float64, device=lp.device).index_add_(
        0, ids[inside], lp
    )
    counts = torch.bincount(ids[inside], minlength=num_chunks).clamp_min(1)
    return (sums / counts).exp().to(token_logprobs.dtype)


def bayesian_proxy(k: Number, n: Number, alpha: float, prior: Number) -> Number:
    """Eq. 5: (k_sem + alpha * prior) / (N + alpha), in [0, 1] when k_sem in [0, N] and prior in [0, 1]."""
    if alpha < 0:
        raise ValueError(f"alpha (prior strength) must be >= 0, got {alpha}")
    if alpha == 0 and not isinstance(n, Tensor) and n == 0:
        raise ValueError("N = 0 continuations and alpha = 0 leave the proxy undefined")
    return (k + alpha * prior) / (n + alpha)


def bayesian_proxy_convex(freq: Number, n: Number, alpha: float, prior: Number) -> Number:
    """Eq. 10, the same proxy as a convex combination: N/(N+a) * freq + a/(N+a) * prior."""
    return n / (n + alpha) * freq + alpha / (n + alpha) * prior


def proxy_lower_bound(n: Number, alpha: float, prior: Number) -> Number:
    """Eq. 12 (Theorem 4.1b): proxy >= alpha * prior / (N + alpha), > 0 even when k_sem = 0."""
    return alpha * prior / (n + alpha)


def proxy_mse(n: float, alpha: float, sigma2: float, mu: float, prior: float) -> float:
    """Eq. 13 (Theorem 4.1c): variance N sigma^2/(N+a)^2 plus squared bias a^2 (prior - mu)^2/(N+a)^2."""
    return (n * sigma2 + alpha**2 * (prior - mu) ** 2) / (n + alpha) ** 2


def hoeffding_bound(n: float, alpha: float, eps: float) -> float:
    """Eq. 14 (Theorem 4.2): P(|proxy - shrunk mean| >= eps) <= 2 exp(-2 (N + a)^2 eps^2 / N)."""
    return min(1.0, 2.0 * math.exp(-2.0 * (n + alpha) ** 2 * eps**2 / n))


@dataclass(frozen=True)
class ProxyEstimate:
    """Estimates for K chunks: k_sem, frequentist, prior and proxy are [K] tensors (detached),
    n is the number of continuations per chunk; proxy = (k_sem + alpha * prior) / (n + alpha)."""

    k_sem: Tensor
    n: int | Tensor
    frequentist: Tensor
    prior: Tensor
    proxy: Tensor


def estimate_proxies(phi_scores: Tensor, prior: Tensor, alpha: float) -> ProxyEstimate:
    """Eq. 3 + 5 for K chunks: phi_scores [K, N] of the N continuations, prior [K] (Eq. 4)."""
    if phi_scores.dim() != 2 or prior.shape != phi_scores.shape[:1]:
        raise ValueError(
            f"need phi_scores [K, N] and prior [K]; got {tuple(phi_scores.shape)} and {tuple(prior.shape)}"
        )
    k = k_sem(phi_scores)
    n = phi_scores.shape[1]
    return ProxyEstimate(
        k_sem=k,
        n=n,
        frequentist=frequentist_proxy(k, n),
        prior=prior,
        proxy=bayesian_proxy(k, n, alpha, prior.to(k.dtype)),
    )


def chunk_proxies(
    student: LogitSource,
    targets: Tensor,
    layout: ChunkLayout,
    k: Tensor,
    n: int | Tensor,
    alpha: float,
    *,
    token_slice: int = 512,
    vocab_slice: int = 8192,
) -> ProxyEstimate:
    """Eq. 4 + 5 with the learner's current weights: the prior of every chunk from the student's
    log-probabilities of its own tokens (no gradient), then the Bayesian proxy.

    student: logits [B, T, V] or HiddenStates of pi_theta, aligned with targets [B, T];
    layout: the batch's chunks (K of them); k: [K] k_sem per chunk (Eq. 3); n: N (or [K]).
    """
    if k.shape != (layout.num_chunks,):
        raise ValueError(
            f"k_sem must be [K] = [{layout.num_chunks}], one per chunk; got {tuple(k.shape)}"
        )
    with torch.no_grad():
        stats = token_stats(
            student, targets, layout.audited_mask, token_slice=token_slice, vocab_slice=vocab_slice
        )
        prior = chunk_priors(stats.logprobs, layout.chunk_index, layout.num_chunks)  # [K]
    k = k.to(prior.dtype)
    return ProxyEstimate(
        k_sem=k,
        n=n,
        frequentist=frequentist_proxy(k, n),
        prior=prior,
        proxy=bayesian_proxy(k, n, alpha, prior),
    )
