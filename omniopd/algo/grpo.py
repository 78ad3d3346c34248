"""GRPO, the paper's self-exploratory RL baseline (Table 1), as in "DeepSeekMath: Pushing the
Limits of Mathematical Reasoning in Open Language Models" (Shao et al., 2024), §4.1:

    J(theta) = E[ 1/G sum_i 1/|o_i| sum_t { min( r_it A_it, clip(r_it, 1 - eps, 1 + eps) A_it )
                                             - beta D_KL[pi_theta || pi_ref] } ]          (Eq. 3)
    r_it     = pi_theta(o_it | q, o_i,<t) / pi_theta_old(o_it | q, o_i,<t)
    D_KL     = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1      (per token, unbiased)   (Eq. 4)
    A_it     = (R_i - mean(R)) / std(R)       outcome supervision: every token of o_i   (§4.1.2)

R_1..R_G are the rule-based rewards of the G samples of one prompt (a group). We minimise
-J. pi_theta_old is the policy that sampled o_i: its per-token log-probabilities are stored
with the trajectory by the rollout worker, so a trajectory trained one or more policy
versions after it was sampled (learner.max_policy_lag) gets the importance ratio it needs.

Choices the paper leaves open, made here and documented in docs/algo.md:
- std is the population standard deviation of the group (ddof = 0), plus `eps_std`
  (1e-6) so a near-constant group stays finite; `scale=False` drops the division
  (mean-centred advantages only, the "Dr. GRPO" variant).
- A group whose rewards are all equal has advantage exactly 0 for every member (tested
  for equality, not computed: the float mean of equal values need not equal them). It
  still runs through the loss (its KL term, if any, trains) and is counted by the caller.
- Length normalisation: `length_norm="sequence"` is Eq. 3's 1/|o_i| (each sequence's terms
  averaged over its tokens, sequences then summed: the caller divides by the number of
  sequences); `"token"` sums the token terms (the caller divides by the number of tokens:
  DAPO's token-level mean, which weighs long answers by their length).
- Clipping is asymmetric if asked (`clip_low`, `clip_high`; DAPO's "clip-higher"); the
  paper's symmetric eps is clip_low = clip_high.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

LengthNorm = Literal["sequence", "token"]


def group_advantages(rewards: Tensor, *, scale: bool = True, eps_std: float = 1e-6) -> Tensor:
    """§4.1.2 outcome supervision: (R_i - mean(R)) / (std(R) + eps_std) for one group.

    rewards: [G] the group's rewards. Returns [G] float32. All-equal rewards -> exact zeros.
    """
    rewards = rewards.to(torch.float32)
    if rewards.numel() == 0:
        raise ValueError("a group needs at least one reward")
    if bool((rewards == rewards[0]).all()):
        return torch.zeros_like(rewards)
    centred = rewards - rewards.mean()
    return centred / (rewards.std(correction=0) + eps_std) if scale else centred


@dataclass(frozen=True)
class GRPOLoss:
    """One batch of Eq. 3 (negated, summed as `length_norm` says). `loss` is differentiable;
    the rest are token counts and sums for metrics (clipped_* count tokens where the clip is
    active, i.e. where the token has no gradient from the surrogate)."""

    loss: Tensor
    policy_term: float  # -sum of the clipped surrogate (same normalisation as loss)
    kl_term: float  # beta * sum of D_KL (same normalisation); 0 without a reference
    kl_sum: float  # sum of the Eq. 4 estimate over tokens (nats), unweighted
    ratio_sum: float
    clipped_low: int  # A < 0 and r < 1 - clip_low
    clipped_high: int  # A > 0 and r > 1 + clip_high
    tokens: int


def grpo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    length_norm: LengthNorm = "sequence",
) -> GRPOLoss:
    """-Eq. 3 (with Eq. 4 when `ref_logprobs` is given and beta > 0), as a sum over sequences.

    logprobs: [B, T] log pi_theta of the sampled tokens (differentiable); old_logprobs,
    ref_logprobs: [B, T] of the sampling and reference policies (no gradient); advantages:
    [B] one per sequence (outcome supervision); mask: [B, T] bool, the sampled tokens.
    """
    if length_norm not in ("sequence", "token"):
        raise ValueError(f"length_norm must be 'sequence' or 'token', got {length_norm!r}")
    mask = mask.to(logprobs.device)
    keep = mask.to(logprobs.dtype)  # [B, T]
    # Masked positions get log-ratio 0 so exp() never overflows on padding.
    log_ratio = torch.where(mask, logprobs - old_logprobs.detach().to(logprobs.dtype), 0.0)  # [B, T]
    ratio = log_ratio.exp()  # [B, T]
    adv = advantages.detach().to(logprobs.dtype)[:, None]  # [B, 1]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * adv)  # [B, T]
    per_token = -surrogate
    kl = torch.zeros_like(per_token)
    if ref_logprobs is not None and beta > 0:
        ref_log_ratio = torch.where(mask, ref_logprobs.detach().to(logprobs.dtype) - logprobs, 0.0)  # [B, T]
        kl = ref_log_ratio.exp() - ref_log_ratio - 1.0  # Eq. 4, >= 0
        per_token = per_token + beta * kl
    weight = keep
    if length_norm == "sequence":
        weight = keep / keep.sum(dim=1, keepdim=True).clamp(min=1.0)  # Eq. 3's 1/|o_i|
    loss = (per_token * weight).sum()
    with torch.no_grad():
        return GRPOLoss(
            loss=loss,
            policy_term=float(-(surrogate * weight).sum()),
            kl_term=float((beta * kl * weight).sum()),
            kl_sum=float((kl * keep).sum()),
            ratio_sum=float((ratio * keep).sum()),
            clipped_low=int((mask & (adv < 0) & (ratio < 1.0 - clip_low)).sum()),
            clipped_high=int((mask & (adv > 0) & (ratio > 1.0 + clip_high)).sum()),
            tokens=int(mask.sum()),
        )
