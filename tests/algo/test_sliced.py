"""Blockwise log-probabilities and KLs: equal to the dense computation, gradients, Pinsker."""

import pytest
import torch
import torch.nn.functional as F

from omniopd.algo.sliced import HiddenStates, token_stats

B, T, H, V = 2, 9, 6, 37


def _inputs(dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    student = HiddenStates(
        torch.randn(B, T, H, dtype=dtype, generator=gen, requires_grad=True),
        torch.randn(V, H, dtype=dtype, generator=gen, requires_grad=True),
        torch.randn(V, dtype=dtype, generator=gen, requires_grad=True),
    )
    other = HiddenStates(
        torch.randn(B, T, H, dtype=dtype, generator=gen),
        torch.randn(V, H, dtype=dtype, generator=gen),
    )
    targets = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.rand(B, T, generator=gen) > 0.3
    return student, other, targets, mask


def _dense(student: HiddenStates, other: HiddenStates, targets, mask):
    """The naive computation: full log-softmax of both models, then the sums."""
    ls = torch.log_softmax(student.hidden @ student.weight.T + student.bias, -1)  # [B, T, V]
    lo = torch.log_softmax(other.hidden @ other.weight.T, -1)
    logprobs = ls.gather(-1, targets[..., None]).squeeze(-1) * mask
    kos = F.kl_div(ls, lo, log_target=True, reduction="none").sum(-1) * mask  # KL(o || s)
    kso = F.kl_div(lo, ls, log_target=True, reduction="none").sum(-1) * mask  # KL(s || o)
    return logprobs, kos, kso


@pytest.mark.parametrize(
    ("token_slice", "vocab_slice"), [(1, 1), (3, 5), (4, 37), (100, 8), (512, 8192)]
)
def test_sliced_stats_equal_the_dense_computation(token_slice, vocab_slice):
    student, other, targets, mask = _inputs()
    stats = token_stats(
        student,
        targets,
        mask,
        other=other,
        kl_other_student=True,
        kl_student_other=True,
        token_slice=token_slice,
        vocab_slice=vocab_slice,
    )
    dense = _dense(student, other, targets, mask)
    for got, want in zip(
        (stats.logprobs, stats.kl_other_student, stats.kl_student_other), dense, strict=True
    ):
        assert got.shape == (B, T)
        assert torch.allclose(got, want, atol=1e-6, rtol=0)
        assert torch.allclose(got, want, atol=1e-12, rtol=0)  # float64: agreement to rounding


def test_sliced_stats_in_float32_and_bf16_logits():
    student, other, targets, mask = _inputs()
    dense = _dense(student, other, targets, mask)
    logits = (student.hidden @ student.weight.T + student.bias).detach()
    other_logits = (other.hidden @ other.weight.T).detach()
    stats = token_stats(
        logits.float(),
        targets,
        mask,
        other=other_logits.float(),
        kl_other_student=True,
        vocab_slice=7,
    )
    assert stats.logprobs.dtype == torch.float32
    assert torch.allclose(stats.kl_other_student.double(), dense[1], atol=2e-5)
    stats = token_stats(logits.bfloat16(), targets, mask, vocab_slice=7)
    assert stats.logprobs.dtype == torch.float32
    ref = (
        torch.log_softmax(logits.bfloat16().float(), -1).gather(-1, targets[..., None]).squeeze(-1)
        * mask
    )
    assert torch.allclose(stats.logprobs, ref, atol=1e-5)


def test_gradients_equal_autograd_through_the_dense_computation():
    student, other, targets, mask = _inputs()
    w = torch.randn(3, B, T, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    stats = token_stats(
        student,
        targets,
        mask,
        other=other,
        kl_other_student=True,
        kl_student_other=True,
        token_slice=4,
        vocab_slice=6,
    )
    got = torch.autograd.grad(
        sum(
            (s * wi).sum()
            for s, wi in zip(
                (stats.logprobs, stats.kl_other_student, stats.kl_student_other), w, strict=True
            )
        ),
        student.__dict__.values(),
    )
    dense = _dense(student, other, targets, mask)
    want = torch.autograd.grad(
        sum((s * wi).sum() for s, wi in zip(dense, w, strict=True)), student.__dict__.values()
    )
    for g, r in zip(got, want, strict=True):
        assert torch.allclose(g, r, atol=1e-12)


def test_gradient_with_respect_to_logits_matches_finite_differences():
    _, _, targets, mask = _inputs()
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(B, T, 11, dtype=torch.float64, generator=gen, requires_grad=True)
    other = torch.randn(B, T, 11, dtype=torch.float64, generator=gen)
    targets = targets % 11

    def f(z):
        s = token_stats(
            z,
            targets,
            mask,
            other=other,
            kl_other_student=True,
            kl_student_other=True,
            token_slice=5,
            vocab_slice=4,
        )
        return s.logprobs, s.kl_other_student, s.kl_student_other

    assert torch.autograd.gradcheck(f, (logits,))


def test_frozen_weight_gets_no_gradient_and_other_is_a_constant():
    student, other, targets, mask = _inputs()
    frozen = HiddenStates(student.hidden, student.weight.detach())
    other_req = HiddenStates(other.hidden.clone().requires_grad_(), other.weight)
    stats = token_stats(frozen, targets, mask, other=other_req, kl_other_student=True)
    (stats.logprobs.sum() + stats.kl_other_student.sum()).backward()
    assert student.hidden.grad is not None and other_req.hidden.grad is None


def test_kl_is_zero_when_both_models_are_the_same():
    student, _, _targets, mask = _inputs(dtype=torch.float32)
    same = HiddenStates(student.hidden.detach(), student.weight.detach(), student.bias.detach())
    stats = token_stats(
        student, None, mask, other=same, kl_other_student=True, kl_student_other=True, vocab_slice=5
    )
    assert stats.logprobs is None
    assert stats.kl_other_student.abs().max() == 0 and stats.kl_student_other.abs().max() == 0


def test_masked_vocabulary_entries_give_no_nans():
    logits = torch.tensor([[[0.0, float("-inf"), 1.0]]], requires_grad=True)
    other = torch.tensor([[[0.5, float("-inf"), 0.0]]])
    stats = token_stats(
        logits,
        torch.tensor([[2]]),
        torch.ones(1, 1, dtype=torch.bool),
        other=other,
        kl_other_student=True,
        kl_student_other=True,
        vocab_slice=1,
    )
    (stats.logprobs + stats.kl_other_student + stats.kl_student_other).sum().backward()
    assert torch.isfinite(stats.kl_other_student).all() and torch.isfinite(logits.grad).all()


def test_requests_that_cannot_be_computed_are_refused():
    student, _other, targets, mask = _inputs()
    with pytest.raises(ValueError, match="no `other`"):
        token_stats(student, targets, mask, kl_other_student=True)
    with pytest.raises(ValueError, match="vocabulary"):
        token_stats(student, targets, mask, other=torch.zeros(B, T, V + 1), kl_other_student=True)
    with pytest.raises(ValueError, match="mask"):
        token_stats(student, targets, mask[:, :-1])


def test_pinsker_bounds_total_variation_by_the_kl_anchor():
    """Theorem 4.3, Eq. 16: TV(pi_ref, pi_theta) <= sqrt(KL(pi_ref || pi_theta) / 2) per token.

    Pinsker's inequality holds in both directions, so the bound alone cannot tell a swapped
    anchor: the anchor's KL (as the learner computes it, and as Eq. 8's loss reports it) is
    also checked against KL(pi_ref || pi_theta) written from its definition, on
    distributions where the two directions differ by more than a quarter at nearly every token."""
    from omniopd.algo.chunks import layout_from_spans
    from omniopd.algo.losses import omniopd_loss

    gen = torch.Generator().manual_seed(11)
    for scale in (0.1, 1.0, 5.0, "spike"):
        theta = torch.randn(4, 50, 300, dtype=torch.float64, generator=gen) * (1.0 if scale == "spike" else scale)
        if scale == "spike":  # pi_ref puts most of its mass on one token pi_theta finds unlikely
            spike = torch.randint(0, 300, (4, 50, 1), generator=gen)
            ref = theta.scatter_add(-1, spike, torch.full((4, 50, 1), 6.0, dtype=torch.float64))
        else:
            ref = theta + torch.randn(4, 50, 300, dtype=torch.float64, generator=gen) * scale
        mask = torch.ones(4, 50, dtype=torch.bool)
        kl = token_stats(
            theta, None, mask, other=ref, kl_other_student=True, vocab_slice=64
        ).kl_other_student
        p_ref, p_theta = ref.softmax(-1), theta.softmax(-1)
        kl_ref_theta = (p_ref * (p_ref.log() - p_theta.log())).sum(-1)  # the definition, [4, 50]
        kl_theta_ref = (p_theta * (p_theta.log() - p_ref.log())).sum(-1)  # the swapped direction
        assert torch.allclose(kl, kl_ref_theta, atol=1e-10, rtol=1e-9)
        if scale == "spike":
            assert (kl_ref_theta > 1.25 * kl_theta_ref).double().mean() > 0.9
        tv = 0.5 * (p_ref - p_theta).abs().sum(-1)
        assert (tv <= torch.sqrt(kl / 2) + 1e-12).all()
        assert (tv > 0).all()
        layout = layout_from_spans([[]] * 4, lengths=[50] * 4, seq_len=50)  # every token un-audited
        out = omniopd_loss(theta, ref, torch.zeros(4, 50, dtype=torch.long), layout,
                           torch.zeros(0, dtype=torch.float64), beta=1.0)
        assert out.kl == pytest.approx(kl_ref_theta.mean().item(), rel=1e-9)
