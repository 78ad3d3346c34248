"""GRPO (DeepSeekMath Eq. 3-4, omniopd/algo/grpo.py): hand-computed values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from omniopd.algo.grpo import group_advantages, grpo_loss


def test_group_advantages_are_the_rewards_standardised_within_the_group():
    # R = [1, 0, 0, 0]: mean 1/4, population std sqrt(1/4 * 3/4) = 0.4330127.
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    std = math.sqrt(0.25 * 0.75)
    assert adv.tolist() == pytest.approx([0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std], abs=1e-5)
    assert float(adv.sum()) == pytest.approx(0.0, abs=1e-6)
    # Two right, two wrong: exactly +-1 (up to eps_std).
    assert group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0])).tolist() == pytest.approx([1, -1, -1, 1], abs=1e-5)


def test_unscaled_advantages_are_only_centred():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), scale=False)
    assert adv.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


@pytest.mark.parametrize("rewards", [[0.0, 0.0, 0.0], [1.0, 1.0], [0.1, 0.1, 0.1], [0.7]])
def test_all_equal_rewards_give_exactly_zero_advantage(rewards):
    # 0.1 * 3 / 3 != 0.1 in floats: the zero must come from the equality test, not the arithmetic.
    adv = group_advantages(torch.tensor(rewards))
    assert torch.equal(adv, torch.zeros(len(rewards)))


def _one_sequence(ratios, advantage, *, clip=0.2, length_norm="sequence"):
    logprobs = torch.tensor([[math.log(r) for r in ratios]], requires_grad=True)
    old = torch.zeros(1, len(ratios))
    mask = torch.ones(1, len(ratios), dtype=torch.bool)
    out = grpo_loss(logprobs, old, torch.tensor([advantage]), mask, clip_low=clip, clip_high=clip,
                    length_norm=length_norm)
    out.loss.backward()
    return out, logprobs.grad[0].tolist()


def test_clipping_at_the_upper_bound_for_a_positive_advantage():
    # ratios 1.5 and 0.5, A = +1, eps = 0.2: min(1.5, 1.2) = 1.2 (clipped: no gradient),
    # min(0.5, 0.8) = 0.5 (d/dlogp of r*A = r*A = 0.5). Eq. 3 averages over the 2 tokens.
    out, grad = _one_sequence([1.5, 0.5], +1.0)
    assert out.loss.item() == pytest.approx(-(1.2 + 0.5) / 2)
    assert grad == pytest.approx([0.0, -0.5 / 2])
    assert (out.clipped_high, out.clipped_low, out.tokens) == (1, 0, 2)


def test_clipping_at_the_lower_bound_for_a_negative_advantage():
    # A = -1: min(-1.5, -1.2) = -1.5 (unclipped: gradient -1.5), min(-0.5, -0.8) = -0.8 (clipped).
    out, grad = _one_sequence([1.5, 0.5], -1.0)
    assert out.loss.item() == pytest.approx(-(-1.5 - 0.8) / 2)
    assert grad == pytest.approx([1.5 / 2, 0.0])
    assert (out.clipped_high, out.clipped_low) == (0, 1)


def test_asymmetric_clip_uses_each_bound():
    logprobs = torch.tensor([[math.log(1.25), math.log(0.85)]], requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    up = grpo_loss(logprobs, torch.zeros(1, 2), torch.tensor([1.0]), mask, clip_low=0.1, clip_high=0.28,
                   length_norm="token")
    # clip-higher 0.28: 1.25 is inside [0.9, 1.28], so it is not clipped.
    assert up.loss.item() == pytest.approx(-(1.25 + 0.85))
    down = grpo_loss(logprobs, torch.zeros(1, 2), torch.tensor([-1.0]), mask, clip_low=0.1, clip_high=0.28,
                     length_norm="token")
    # A < 0: 0.85 < 0.9 is clipped to 0.9 (min(-0.85, -0.9) = -0.9).
    assert down.loss.item() == pytest.approx(-(-1.25 - 0.9))
    assert down.clipped_low == 1


def test_sequence_norm_averages_each_sequence_token_norm_sums_tokens():
    # Two sequences, ratio 1 everywhere (on-policy): the surrogate is A per token.
    logprobs = torch.zeros(2, 4, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    adv = torch.tensor([1.0, -0.5])
    seq = grpo_loss(logprobs, torch.zeros(2, 4), adv, mask, length_norm="sequence")
    tok = grpo_loss(logprobs, torch.zeros(2, 4), adv, mask, length_norm="token")
    assert seq.loss.item() == pytest.approx(-(1.0 + -0.5))  # each sequence: mean of its tokens
    assert tok.loss.item() == pytest.approx(-(2 * 1.0 + 4 * -0.5))


def test_kl_to_the_reference_is_the_eq4_estimator_and_its_gradient():
    # log pi_ref - log pi_theta = log 2: D = 2 - log 2 - 1; dD/dlogp_theta = 1 - 2 = -1.
    logprobs = torch.tensor([[0.0]], requires_grad=True)
    ref = torch.tensor([[math.log(2.0)]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    out = grpo_loss(logprobs, torch.zeros(1, 1), torch.tensor([0.0]), mask, ref_logprobs=ref, beta=0.1)
    out.loss.backward()
    assert out.kl_sum == pytest.approx(2 - math.log(2) - 1)
    assert out.loss.item() == pytest.approx(0.1 * (2 - math.log(2) - 1))
    assert logprobs.grad.item() == pytest.approx(-0.1)
    # beta = 0: the reference is ignored.
    assert float(grpo_loss(logprobs, torch.zeros(1, 1), torch.tensor([0.0]), mask, ref_logprobs=ref).loss) == 0.0


def test_a_zero_advantage_group_contributes_neither_loss_nor_gradient():
    logprobs = torch.randn(3, 5, requires_grad=True)
    mask = torch.ones(3, 5, dtype=torch.bool)
    adv = group_advantages(torch.tensor([1.0, 1.0, 1.0]))
    out = grpo_loss(logprobs, logprobs.detach() + 0.3, adv, mask)
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert torch.equal(logprobs.grad, torch.zeros(3, 5))


def test_padding_never_reaches_the_loss_even_with_extreme_values():
    logprobs = torch.tensor([[-1.0, 500.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -500.0]])
    mask = torch.tensor([[True, False]])
    out = grpo_loss(logprobs, old, torch.tensor([2.0]), mask, ref_logprobs=old, beta=0.5)
    out.loss.backward()
    assert math.isfinite(out.loss.item()) and out.loss.item() == pytest.approx(-2.0)
    assert logprobs.grad[0, 1].item() == 0.0


def test_gradient_matches_finite_differences():
    torch.manual_seed(0)
    logprobs = (torch.randn(3, 6, dtype=torch.float64) * 0.3 - 1).requires_grad_()
    old = logprobs.detach() + torch.randn(3, 6, dtype=torch.float64) * 0.1  # ratios near 1: mostly unclipped
    ref = logprobs.detach() + torch.randn(3, 6, dtype=torch.float64) * 0.2
    mask = torch.rand(3, 6) > 0.2
    adv = torch.tensor([0.9, -1.2, 0.3], dtype=torch.float64)

    def f(lp):
        return grpo_loss(lp, old, adv, mask, ref_logprobs=ref, beta=0.05, clip_low=0.5, clip_high=0.5).loss

    assert torch.autograd.gradcheck(f, (logprobs,), eps=1e-6, atol=1e-6)
