"""The OmniOPD loss (Eq. 8) and the baselines it is compared with (Eq. 1/19, Eq. 2).

    L = - sum_c proxy_c sum_{t in c} log pi_theta(y_t | x, y_<t)                  (chunk term)
        + beta sum_{t in U} KL(pi_ref(. | x, y_<t) || pi_theta(. | x, y_<t))       (anchor)  (Eq. 8)

proxy_c is the Bayesian proxy of Eq. 5 (estimator.py), a detached weight in [0, 1]; U are the
un-audited response tokens. The KL is over the full vocabulary and computed blockwise
(sliced.py): with `HiddenStates` inputs neither model's [B, T, V] logits ever exist, and with
logits inputs no float32 [B, T, V] copy is made (see sliced.py for the exact claim).

Alignment: position t of `student`/`reference` (logits or hidden states) is the distribution
that produced `targets[:, t]`, i.e. the caller has already shifted by one. Positions outside
the chunks and U (prompt, padding) contribute nothing.

Normalisation (the same for every term, so loss = chunk_loss + kl_term exactly):
"sum" = Eq. 8 as written, summed over the B sequences; "sequence" = mean over the B
sequences of their Eq. 8 value (for SFT this is Eq. 19's 1/N over teacher rollouts);
"token" = the batch sum divided by the number of loss-bearing tokens (audited + U).

Ablations are arguments: alpha = 0 (in `chunk_proxies`/`bayesian_proxy`) = frequentist
proxy; beta = 0 = no anchor (the reference may then be None and is never evaluated);
uniform placement is `select_chunks(..., placement="uniform")`.

Usage (one learner step):

    layout = layout_from_spans(spans, lengths, seq_len=T, offsets=prompt_lengths)
    student = HiddenStates(hidden, model.lm_head.weight)            # hidden: [B, T, H]
    with torch.no_grad():
        reference = HiddenStates(ref_hidden, ref_model.lm_head.weight)
    est = chunk_proxies(student, targets, layout, k_sem, n=10, alpha=1.0)
    out = omniopd_loss(student, reference, targets, layout, est.proxy, beta=0.1)
    out.loss.backward(); log(out.metrics())
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import Tensor

from omniopd.algo.chunks import ChunkLayout
from omniopd.algo.sliced import LogitSource, token_stats

Normalisation = Literal["sum", "sequence", "token"]


def _metrics(result) -> dict[str, float]:
    """Every field of a loss result as a float (the loss detached), for logging."""
    values = {f.name: getattr(result, f.name) for f in fields(result)}
    return {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in values.items()}


def _normalise(values: Tensor, covered: Tensor, how: Normalisation) -> Tensor:
    """Reduce per-position values [B, T] to a scalar (module docstring: Normalisation)."""
    if how == "sum":
        return values.sum()
    if how == "sequence":
        return values.sum(dim=1).mean() if values.shape[0] else values.sum()
    if how == "token":
        return values.sum() / covered.sum().clamp_min(1)
    raise ValueError(f"normalisation must be 'sum', 'sequence' or 'token', got {how!r}")


@dataclass(frozen=True)
class OmniOPDLoss:
    """Eq. 8 and its parts. loss = chunk_loss + kl_term (all under the same normalisation);
    `loss` is differentiable, everything else is detached. kl is the mean
    KL(pi_ref || pi_theta) per un-audited token (nats), 0 when beta = 0 (not computed)."""

    loss: Tensor
    chunk_loss: float
    kl_term: float
    kl: float
    proxy_mean: float
    proxy_min: float
    proxy_max: float
    audited_fraction: float
    audited_tokens: int
    unaudited_tokens: int

    def metrics(self) -> dict[str, float]:
        """Every field as a float, for logging (loss detached)."""
        return _metrics(self)


def omniopd_loss(
    student: LogitSource,
    reference: LogitSource | None,
    targets: Tensor,
    layout: ChunkLayout,
    proxies: Tensor,
    *,
    beta: float,
    normalisation: Normalisation = "sum",
    token_slice: int = 512,
    vocab_slice: int = 8192,
) -> OmniOPDLoss:
    """Eq. 8 of the OmniOPD paper: chunk loss weighted by the Bayesian proxy plus a
    KL(pi_ref || pi_theta) anchor on un-audited tokens.

    student: logits [B, T, V] or HiddenStates of pi_theta (differentiable); reference: the same
    for the frozen pi_ref (constant; may be None when beta = 0); targets: [B, T] sampled token
    ids; layout: chunks and U; proxies: [K] per-chunk proxies (Eq. 5), detached here;
    beta >= 0; slices: tokens x vocabulary entries per block (memory, not results).
    """
    if proxies.shape != (layout.num_chunks,):
        raise ValueError(f"proxies must be [K] = [{layout.num_chunks}], one per chunk; got {tuple(proxies.shape)}")
    if beta < 0 or (beta > 0 and reference is None):
        raise ValueError(f"beta must be >= 0 and a reference is needed when beta > 0; got beta={beta}")
    audited, unaudited = layout.audited_mask, layout.unaudited_mask
    slices = {"token_slice": token_slice, "vocab_slice": vocab_slice}
    logprobs = token_stats(student, targets, audited, **slices).logprobs  # [B, T], 0 off-chunk
    # Index -1 (not in a chunk) picks the appended 0, so off-chunk positions get weight 0.
    padded = torch.cat([proxies.detach().to(logprobs.dtype), logprobs.new_zeros(1)])
    weight = padded[layout.chunk_index]  # [B, T]
    chunk_values = -weight * logprobs
    if beta > 0:
        kl_tok = token_stats(student, None, unaudited, other=reference, kl_other_student=True, **slices).kl_other_student
    else:
        kl_tok = torch.zeros_like(chunk_values)
    covered = audited | unaudited
    chunk_loss = _normalise(chunk_values, covered, normalisation)
    kl_term = _normalise(beta * kl_tok, covered, normalisation)
    n_aud, n_un = int(audited.sum()), int(unaudited.sum())
    p = proxies.detach().float()
    return OmniOPDLoss(
        loss=chunk_loss + kl_term,
        chunk_loss=float(chunk_loss.detach()),
        kl_term=float(kl_term.detach()),
        kl=float(kl_tok.detach().sum()) / max(n_un, 1),
        proxy_mean=float(p.mean()) if p.numel() else 0.0,
        proxy_min=float(p.min()) if p.numel() else 0.0,
        proxy_max=float(p.max()) if p.numel() else 0.0,
        audited_fraction=n_aud / max(n_aud + n_un, 1),
        audited_tokens=n_aud,
        unaudited_tokens=n_un,
    )


@dataclass(frozen=True)
class SFTLoss:
    """Eq. 1 / Eq. 19: loss (differentiable) and the mean negative log-likelihood per token."""

    loss: Tensor
    nll_per_token: float
    tokens: int

    def metrics(self) -> dict[str, float]:
        return _metrics(self)


def sft_loss(
    student: LogitSource,
    targets: Tensor,
    mask: Tensor,
    *,
    normalisation: Normalisation = "sum",
    token_slice: int = 512,
    vocab_slice: int = 8192,
) -> SFTLoss:
    """Eq. 1 / Eq. 19: - sum_t log pi_theta(y_t) over teacher token sequences.

    student: logits [B, T, V] or HiddenStates, where row b holds one teacher sequence
    (e.g. one of the N teacher rollouts, re-tokenized with the student's tokenizer);
    targets: [B, T] the teacher's tokens; mask: [B, T] bool, the teacher tokens to train on.
    normalisation "sequence" gives Eq. 19's average over the N rollouts.
    """
    logprobs = token_stats(student, targets, mask, token_slice=token_slice, vocab_slice=vocab_slice).logprobs
    loss = _normalise(-logprobs, mask, normalisation)
    tokens = int(mask.sum())
    return SFTLoss(loss=loss, nll_per_token=float(-logprobs.detach().sum()) / max(tokens, 1), tokens=tokens)


@dataclass(frozen=True)
class OPDLoss:
    """Eq. 2 baseline: loss (differentiable) and the mean forward / reverse KL per token (nats)."""

    loss: Tensor
    forward_kl: float
    reverse_kl: float
    tokens: int

    def metrics(self) -> dict[str, float]:
        return _metrics(self)


def opd_whitebox_loss(
    student: LogitSource,
    teacher: LogitSource,
    mask: Tensor,
    *,
    forward_weight: float = 0.5,
    normalisation: Normalisation = "sum",
    token_slice: int = 512,
    vocab_slice: int = 8192,
) -> OPDLoss:
    """White-box OPD (Eq. 2), the paper's balanced variant: per token
    w KL(pi_teacher || pi_theta) + (1 - w) KL(pi_theta || pi_teacher), w = 0.5, summed over
    the student's own sampled positions in `mask` [B, T]. Needs the teacher's logits over the
    same vocabulary (a shared tokenizer); the teacher is a constant.
    """
    if not 0.0 <= forward_weight <= 1.0:
        raise ValueError(f"forward_weight must be in [0, 1], got {forward_weight}")
    stats = token_stats(
        student, None, mask, other=teacher, kl_other_student=True, kl_student_other=True,
        token_slice=token_slice, vocab_slice=vocab_slice,
    )
    forward, reverse = stats.kl_other_student, stats.kl_student_other  # [B, T]
    per_token = forward_weight * forward + (1.0 - forward_weight) * reverse
    tokens = int(mask.sum())
    return OPDLoss(
        loss=_normalise(per_token, mask, normalisation),
        forward_kl=float(forward.detach().sum()) / max(tokens, 1),
        reverse_kl=float(reverse.detach().sum()) / max(tokens, 1),
        tokens=tokens,
    )
