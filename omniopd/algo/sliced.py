"""Full-vocabulary token statistics computed in token x vocabulary blocks.

The losses need, at chosen positions of a batch, the student's log-probability of the
sampled token and full-vocabulary KL divergences between the student and another model
(the frozen reference for the Eq. 8 anchor, the teacher for white-box OPD, Eq. 2):

    logprob_t          = z_t[y_t] - logsumexp(z_t)
    KL(other||student) = sum_v p_o(v) (log p_o(v) - log p_s(v))
    KL(student||other) = sum_v p_s(v) (log p_s(v) - log p_o(v))

Memory claim. `token_stats` never holds a [rows, V] tensor in the compute dtype for either
model: the forward pass walks blocks of `token_slice` rows x `vocab_slice` vocabulary entries
once, keeping online-softmax accumulators (running max, sum of exponentials, and the
exp-weighted sum of logit differences) per row, and the backward pass recomputes each block
and turns it into gradients directly. Peak extra memory is a few blocks of
token_slice x vocab_slice floats plus per-row vectors, plus the gradient buffers of the inputs
(for `HiddenStates`: [N, H] and the [V, H] lm_head weight; never [N, V]). So when the caller
passes `HiddenStates` (last hidden state and lm_head weight) neither model's [B, T, V] logits
ever exist, in any dtype. When the caller passes logits [B, T, V] (e.g. bf16 from a HF
forward), those inputs and the gradient w.r.t. them (same shape and dtype) exist, but no
float32 [B, T, V] copy, softmax or product is made. `scripts/bench/kl_memory.py` measures it.

Gradients flow into the student only; `other` is treated as a constant (frozen reference or
teacher). Compute dtype: float32, or float64 when the student is float64 (for gradcheck).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class HiddenStates:
    """Logits given implicitly as hidden @ weight.T (+ bias), so [.., V] is never formed.

    hidden: [B, T, H] final hidden states (after the model's last norm), where hidden[b, t]
    produces the distribution of targets[b, t]; weight: [V, H] output projection
    (lm_head.weight); bias: [V] or None.
    """

    hidden: Tensor
    weight: Tensor
    bias: Tensor | None = None


LogitSource = Tensor | HiddenStates  # logits [B, T, V] (any float dtype) or HiddenStates


@dataclass(frozen=True)
class TokenStats:
    """Per-position statistics, each [B, T] (0 outside the mask) or None when not requested."""

    logprobs: Tensor | None
    kl_other_student: Tensor | None
    kl_student_other: Tensor | None


class _Flat:
    """A logit source flattened to N = B*T rows; `block` materialises one [rows, v1-v0] block."""

    def __init__(self, parts: tuple[Tensor, ...]) -> None:
        self.parts = parts
        self.is_hidden = len(parts) > 1
        self.vocab = parts[1].shape[0] if self.is_hidden else parts[0].shape[1]

    @staticmethod
    def parts_of(src: LogitSource) -> tuple[Tensor, ...]:
        if isinstance(src, HiddenStates):
            parts = (src.hidden.reshape(-1, src.hidden.shape[-1]), src.weight)
            return parts if src.bias is None else (*parts, src.bias)
        return (src.reshape(-1, src.shape[-1]),)

    def block(self, rows: Tensor, v0: int, v1: int, dtype: torch.dtype) -> Tensor:
        if self.is_hidden:
            z = self.parts[0][rows] @ self.parts[1][v0:v1].T  # [r, S] in the model's dtype
            if len(self.parts) == 3:
                z = z + self.parts[2][v0:v1]
        else:
            z = self.parts[0][rows, v0:v1]
        # -inf logits (masked tokens) become the most negative float: p = 0 without NaNs.
        return z.to(dtype).clamp_min(torch.finfo(dtype).min)

    def add_grad(self, grads: list, needs: tuple[bool, ...], rows: Tensor, v0: int, v1: int, dz: Tensor) -> None:
        """Accumulate d(loss)/d(parts) for one block, given dz = d(loss)/d(logits block) [r, S]."""
        if not self.is_hidden:
            if needs[0]:
                grads[0][rows, v0:v1] = dz.to(grads[0].dtype)  # each (row, block) is visited once
            return
        h, w = self.parts[0], self.parts[1]
        if needs[0]:
            grads[0].index_add_(0, rows, dz @ w[v0:v1].to(dz.dtype))
        if needs[1]:
            grads[1][v0:v1] += dz.T @ h[rows].to(dz.dtype)
        if len(self.parts) == 3 and needs[2]:
            grads[2][v0:v1] += dz.sum(dim=0)


@dataclass
class _Spec:
    """Non-tensor arguments of one blockwise pass (rows and targets are index tensors)."""

    rows: Tensor  # [n] flat positions to compute
    targets: Tensor | None  # [n] token ids at those positions, or None (no logprobs)
    n_student: int  # how many of the tensors belong to the student source
    want_kos: bool
    want_kso: bool
    token_slice: int
    vocab_slice: int
    dtype: torch.dtype


class _Online:
    """Online-softmax accumulators for one block of rows, updated one vocabulary slice at a time."""

    def __init__(self, n: int, spec: _Spec, device: torch.device) -> None:
        def vec(fill: float) -> Tensor:
            return torch.full((n,), fill, dtype=spec.dtype, device=device)

        self.spec = spec
        self.m_s, self.s_s, self.a_s = vec(float("-inf")), vec(0.0), vec(0.0)  # student side
        self.m_o, self.s_o, self.a_o = vec(float("-inf")), vec(0.0), vec(0.0)  # other side
        self.target = vec(0.0)

    @staticmethod
    def _rescale(m: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """New running max, factor for the old sums, exp(z - new max)."""
        new_m = torch.maximum(m, z.max(dim=-1).values)
        return new_m, (m - new_m).exp(), (z - new_m.unsqueeze(-1)).exp()

    def update(self, zs: Tensor, zo: Tensor | None, y: Tensor | None, v0: int) -> None:
        self.m_s, scale, e_s = self._rescale(self.m_s, zs)  # e_s: [r, S]
        self.s_s = self.s_s * scale + e_s.sum(dim=-1)
        if self.spec.want_kso:
            self.a_s = self.a_s * scale + (e_s * (zs - zo)).sum(dim=-1)
        if self.spec.want_kos:
            self.m_o, scale_o, e_o = self._rescale(self.m_o, zo)
            self.s_o = self.s_o * scale_o + e_o.sum(dim=-1)
            self.a_o = self.a_o * scale_o + (e_o * (zo - zs)).sum(dim=-1)
        elif zo is not None:  # only the other's normaliser is needed
            self.m_o, scale_o, e_o = self._rescale(self.m_o, zo)
            self.s_o = self.s_o * scale_o + e_o.sum(dim=-1)
        if y is not None:
            local = y - v0
            inside = (local >= 0) & (local < zs.shape[1])
            picked = zs.gather(1, local.clamp(0, zs.shape[1] - 1).unsqueeze(1)).squeeze(1)
            self.target = torch.where(inside, picked, self.target)

    def finish(self) -> dict[str, Tensor]:
        lse_s = self.m_s + self.s_s.log()
        lse_o = self.m_o + self.s_o.log()
        return {
            "lse_s": lse_s,
            "lse_o": lse_o,
            "logprob": self.target - lse_s,
            # KL(o||s) = E_o[z_o - z_s] - lse_o + lse_s ; KL(s||o) = E_s[z_s - z_o] - lse_s + lse_o
            "kos": (self.a_o / self.s_o - lse_o + lse_s).clamp_min(0.0),
            "kso": (self.a_s / self.s_s - lse_s + lse_o).clamp_min(0.0),
        }


def _blocks(spec: _Spec, vocab: int):
    n = spec.rows.numel()
    for r0 in range(0, n, spec.token_slice):
        r1 = min(r0 + spec.token_slice, n)
        yield r0, r1, [(v0, min(v0 + spec.vocab_slice, vocab)) for v0 in range(0, vocab, spec.vocab_slice)]


class _BlockStats(torch.autograd.Function):
    """Forward: logprob, KL(o||s), KL(s||o) per row, blockwise. Backward: blockwise recompute."""

    @staticmethod
    def forward(ctx, spec: _Spec, *tensors: Tensor):
        student, other = _Flat(tensors[: spec.n_student]), None
        if len(tensors) > spec.n_student:
            other = _Flat(tensors[spec.n_student :])
        n = spec.rows.numel()
        out = {k: torch.zeros(n, dtype=spec.dtype, device=spec.rows.device) for k in ("lse_s", "lse_o", "logprob", "kos", "kso")}
        for r0, r1, vslices in _blocks(spec, student.vocab):
            rows = spec.rows[r0:r1]
            y = None if spec.targets is None else spec.targets[r0:r1]
            acc = _Online(r1 - r0, spec, rows.device)
            for v0, v1 in vslices:
                zs = student.block(rows, v0, v1, spec.dtype)  # [r, S]
                zo = None if other is None else other.block(rows, v0, v1, spec.dtype)
                acc.update(zs, zo, y, v0)
            for key, value in acc.finish().items():
                out[key][r0:r1] = value
        ctx.spec = spec
        ctx.save_for_backward(out["lse_s"], out["lse_o"], out["kso"], *tensors)
        return out["logprob"], out["kos"], out["kso"]

    @staticmethod
    def backward(ctx, g_lp: Tensor | None, g_kos: Tensor | None, g_kso: Tensor | None):
        spec: _Spec = ctx.spec
        lse_s, lse_o, kso, *tensors = ctx.saved_tensors
        student = _Flat(tuple(tensors[: spec.n_student]))
        other = _Flat(tuple(tensors[spec.n_student :])) if len(tensors) > spec.n_student else None
        needs = ctx.needs_input_grad[1 : 1 + spec.n_student]
        grads = [torch.zeros_like(t, dtype=t.dtype if not student.is_hidden else spec.dtype) if need else None
                 for t, need in zip(student.parts, needs, strict=True)]
        zero = torch.zeros_like(lse_s)
        g_lp, g_kos, g_kso = (zero if g is None else g.to(spec.dtype) for g in (g_lp, g_kos, g_kso))
        for r0, r1, vslices in _blocks(spec, student.vocab):
            rows, sl = spec.rows[r0:r1], slice(r0, r1)
            for v0, v1 in vslices:
                dz = _block_grad(student, other, spec, rows, v0, v1, lse_s[sl], lse_o[sl], kso[sl],
                                 g_lp[sl], g_kos[sl], g_kso[sl], None if spec.targets is None else spec.targets[sl])
                student.add_grad(grads, needs, rows, v0, v1, dz)
        out = [None if g is None else g.to(t.dtype) for g, t in zip(grads, student.parts, strict=True)]
        return (None, *out, *([None] * (len(tensors) - spec.n_student)))


def _block_grad(student, other, spec, rows, v0, v1, lse_s, lse_o, kso, g_lp, g_kos, g_kso, y) -> Tensor:
    """d(loss)/d(student logits) on one block [r, S]:
    g_lp (onehot - p_s) + g_kos (p_s - p_o) + g_kso p_s (log p_s - log p_o - KL(s||o))."""
    log_ps = student.block(rows, v0, v1, spec.dtype) - lse_s.unsqueeze(1)  # [r, S]
    p_s = log_ps.exp()
    dz = p_s * (g_kos - g_lp).unsqueeze(1)
    if other is not None:
        log_po = other.block(rows, v0, v1, spec.dtype) - lse_o.unsqueeze(1)
        if spec.want_kos:
            dz -= g_kos.unsqueeze(1) * log_po.exp()
        if spec.want_kso:
            dz += g_kso.unsqueeze(1) * p_s * (log_ps - log_po - kso.unsqueeze(1))
    if y is not None:
        local = y - v0
        inside = (local >= 0) & (local < v1 - v0)
        idx = inside.nonzero().squeeze(1)
        dz[idx, local[idx]] += g_lp[idx]
    return dz



def _compute_dtype(src: LogitSource) -> torch.dtype:
    t = src.hidden if isinstance(src, HiddenStates) else src
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def token_stats(
    student: LogitSource,
    targets: Tensor | None,
    mask: Tensor,
    *,
    other: LogitSource | None = None,
    kl_other_student: bool = False,
    kl_student_other: bool = False,
    token_slice: int = 512,
    vocab_slice: int = 8192,
) -> TokenStats:
    """Student log-probabilities of `targets` and KLs against `other` at the positions in `mask`.

    student: logits [B, T, V] or HiddenStates ([B, T, H] + [V, H]), differentiable;
    targets: [B, T] token ids (None: no logprobs); mask: [B, T] bool, positions to compute
    (others are skipped, not computed and masked); other: same kinds as student, a constant.
    Memory and dtype: see the module docstring. Returns TokenStats of [B, T] tensors.
    """
    if token_slice < 1 or vocab_slice < 1:
        raise ValueError(f"token_slice and vocab_slice must be >= 1, got {token_slice}, {vocab_slice}")
    if (kl_other_student or kl_student_other) and other is None:
        raise ValueError("a KL against `other` was requested but no `other` logits/hidden states were given")
    shape = mask.shape
    rows = mask.reshape(-1).nonzero().squeeze(1)  # [n]
    s_parts = _Flat.parts_of(student)
    o_parts = () if other is None else tuple(p.detach() for p in _Flat.parts_of(other))
    vocab = _Flat(s_parts).vocab
    if o_parts and _Flat(o_parts).vocab != vocab:
        raise ValueError(f"student and other must share a vocabulary; got V={vocab} and V={_Flat(o_parts).vocab}")
    if _Flat(s_parts).parts[0].shape[0] != mask.numel():
        raise ValueError(f"mask {tuple(shape)} does not match the student's positions")
    spec = _Spec(
        rows=rows,
        targets=None if targets is None else targets.reshape(-1)[rows].long(),
        n_student=len(s_parts),
        want_kos=kl_other_student,
        want_kso=kl_student_other,
        token_slice=token_slice,
        vocab_slice=vocab_slice,
        dtype=_compute_dtype(student),
    )
    logprob, kos, kso = _BlockStats.apply(spec, *s_parts, *o_parts)

    def scatter(values: Tensor, wanted: bool) -> Tensor | None:
        if not wanted:
            return None
        full = torch.zeros(mask.numel(), dtype=values.dtype, device=values.device)
        return full.index_put((rows,), values).reshape(shape)  # [B, T]

    return TokenStats(
        logprobs=scatter(logprob, targets is not None),
        kl_other_student=scatter(kos, kl_other_student),
        kl_student_other=scatter(kso, kl_student_other),
    )
