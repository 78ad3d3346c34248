"""Per-token predictive entropy of the student (Eq. 6 of the OmniOPD paper).

    H_t = - sum_{v in V} pi_theta(v | x, y_<t) log pi_theta(v | x, y_<t)        (Eq. 6)

The peak-entropy scheduler (Eq. 7, `chunks.py`) ranks positions by H_t. Two sources:

- `exact`: from full logits of one teacher-forced forward pass. Computed in float32 with
  logsumexp, optionally over vocabulary slices so that a [T, V] float32 softmax is never
  materialised: pass 1 takes the logsumexp of every slice and combines them, pass 2 sums
  p * log p slice by slice. Peak extra memory is then O(T * vocab_slice) floats instead of
  several O(T * V) tensors (Qwen3: V = 151,936, so T = 4096 costs 2.5 GB per float32 copy).
- `topk`: from the k log-probabilities an inference engine returns per token
  (`topk_entropy_estimate`), an estimate with the limits stated there.

All functions are pure: tensors in, float32 tensors out (float64 inputs stay float64).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _compute_dtype(t: Tensor) -> torch.dtype:
    # bf16/fp16 logits are upcast; float64 is kept so tests can check to 1e-12.
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _vocab_slices(vocab: int, vocab_slice: int | None) -> list[tuple[int, int]]:
    if vocab_slice is None or vocab_slice >= vocab:
        return [(0, vocab)]
    if vocab_slice < 1:
        raise ValueError(f"vocab_slice must be a positive number of vocabulary entries, got {vocab_slice}")
    return [(v0, min(v0 + vocab_slice, vocab)) for v0 in range(0, vocab, vocab_slice)]


def _logsumexp_sliced(logits: Tensor, slices: list[tuple[int, int]], dtype: torch.dtype) -> Tensor:
    """log sum_v exp(logits[..., v]) combined from per-slice logsumexps. Returns [...]."""
    parts = [torch.logsumexp(logits[..., v0:v1].to(dtype), dim=-1) for v0, v1 in slices]
    return torch.logsumexp(torch.stack(parts, dim=-1), dim=-1)  # [..., n_slices] -> [...]


def _entropy_given_lse(logits: Tensor, lse: Tensor, slices: list[tuple[int, int]], dtype: torch.dtype) -> Tensor:
    """-sum_v p log p, accumulated slice by slice, with log p = logit - lse. Returns [...]."""
    total = torch.zeros(lse.shape, dtype=dtype, device=lse.device)
    for v0, v1 in slices:
        logp = logits[..., v0:v1].to(dtype) - lse.unsqueeze(-1)  # [..., S]
        # A -inf logit (masked token) has p = 0; clamping keeps 0 * log 0 at 0 instead of NaN.
        logp = logp.clamp_min(torch.finfo(dtype).min)
        total -= (logp.exp() * logp).sum(dim=-1)
    return total


def entropy_from_logits(logits: Tensor, vocab_slice: int | None = None) -> Tensor:
    """Exact entropy H_t over the last dimension (Eq. 6), numerically stable.

    logits: [..., V] in any float dtype (e.g. [T, V] or [B, T, V]). `vocab_slice`: compute in
    slices of this many vocabulary entries (None = one slice); the result is the same up to
    float rounding, only the peak memory changes. Returns [...] in float32 (float64 for
    float64 input), in nats, always >= 0.
    """
    dtype = _compute_dtype(logits)
    slices = _vocab_slices(logits.shape[-1], vocab_slice)
    lse = _logsumexp_sliced(logits, slices, dtype)  # [...]
    return _entropy_given_lse(logits, lse, slices, dtype).clamp_min(0.0)


def token_logprobs_and_entropy(
    logits: Tensor, targets: Tensor, vocab_slice: int | None = None
) -> tuple[Tensor, Tensor]:
    """Log-probability of each target token and the entropy at its position (Eq. 6).

    logits: [T, V] (or [..., T, V]), where logits[t] is the distribution that produced
    targets[t]; targets: [T] (or [..., T]) token ids. Returns (logprobs [T], entropies [T]),
    float32 (float64 for float64 input). One logsumexp serves both, computed in slices of
    `vocab_slice` entries when given.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be targets {tuple(targets.shape)} plus a vocabulary dim"
        )
    dtype = _compute_dtype(logits)
    slices = _vocab_slices(logits.shape[-1], vocab_slice)
    lse = _logsumexp_sliced(logits, slices, dtype)  # [..., T]
    target_logits = logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1).to(dtype)
    entropies = _entropy_given_lse(logits, lse, slices, dtype).clamp_min(0.0)
    return target_logits - lse, entropies


def topk_entropy_estimate(topk_logprobs: Tensor) -> Tensor:
    """Entropy estimate from the top-k log-probabilities of each position (Eq. 6, approximated).

    topk_logprobs: [..., k] log-probabilities of the k most likely tokens (any order; -inf
    entries are treated as absent). The residual mass r = 1 - sum_i p_i is treated as one
    extra outcome:  H_est = -sum_i p_i log p_i - r log r.  Returns [...] float32, >= 0.

    Limits (why this is only an estimate):
    - Lumping the residual tokens into one bucket can only lower the entropy, so with exact
      top-k probabilities H_est is a lower bound of H_t; the gap is at most r * log(V - k)
      (residual spread evenly over the other tokens). With k = 20 and a peaked distribution the
      gap is small; at genuine forks, where the residual is large, it is not.
    - The bound holds only if the logprobs come from the same distribution as Eq. 6 (raw
      model, temperature 1). Engines that report post-processed logprobs (temperature, top-p,
      repetition penalties) estimate the entropy of a different distribution.
    - Rankings by H_est and by H_t can differ, so peak-entropy chunks may move; record the
      entropy source with the trajectory. Rounding can make sum_i p_i exceed 1 slightly; the
      residual is clamped at 0.
    """
    dtype = _compute_dtype(topk_logprobs)
    logp = topk_logprobs.to(dtype).clamp_min(torch.finfo(dtype).min)  # [..., k]
    p = logp.exp()
    head = -(p * logp).sum(dim=-1)  # [...]
    residual = (1.0 - p.sum(dim=-1)).clamp_min(0.0)
    tail = -torch.special.xlogy(residual, residual)  # 0 log 0 = 0
    return (head + tail).clamp_min(0.0)
