"""Eq. 6: exact entropy (sliced and unsliced), token log-probabilities, top-k estimate."""

import math

import pytest
import torch

from omniopd.algo.entropy import (
    entropy_from_logits,
    token_logprobs_and_entropy,
    topk_entropy_estimate,
)


def test_entropy_of_hand_computed_distributions():
    probs = torch.tensor([[0.5, 0.25, 0.25, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    h = entropy_from_logits(probs.log())  # log 0 = -inf: masked tokens
    assert h.dtype == torch.float32
    expected = torch.tensor([1.5 * math.log(2), 0.0, math.log(4)])
    assert torch.allclose(h, expected, atol=1e-6)
    assert not h.isnan().any()


def test_entropy_is_invariant_to_logit_shift_and_stable_for_huge_logits():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    h = entropy_from_logits(logits)
    assert torch.allclose(entropy_from_logits(logits + 100.0), h, atol=1e-4)
    peaked = entropy_from_logits(logits * 1e4)
    assert torch.isfinite(peaked).all() and (peaked >= 0).all()


@pytest.mark.parametrize("vocab_slice", [1, 7, 64, 100, 1000])
def test_sliced_entropy_equals_unsliced(vocab_slice):
    logits = (
        torch.randn(3, 9, 100, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    )
    full = entropy_from_logits(logits)
    assert full.shape == (3, 9) and full.dtype == torch.float64
    assert torch.allclose(entropy_from_logits(logits, vocab_slice=vocab_slice), full, atol=1e-12)


def test_entropy_upcasts_bf16_logits_to_float32():
    logits = torch.randn(4, 32, generator=torch.Generator().manual_seed(2))
    h = entropy_from_logits(logits.bfloat16(), vocab_slice=5)
    assert h.dtype == torch.float32
    assert torch.allclose(h, entropy_from_logits(logits.bfloat16().float()), atol=1e-5)


def test_token_logprobs_match_log_softmax_and_share_the_entropy():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(11, 40, dtype=torch.float64, generator=gen)
    targets = torch.randint(0, 40, (11,), generator=gen)
    logprobs, entropies = token_logprobs_and_entropy(logits, targets, vocab_slice=6)
    expected = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)
    assert torch.allclose(logprobs, expected, atol=1e-12)
    assert torch.allclose(entropies, entropy_from_logits(logits), atol=1e-12)


def test_token_logprobs_reject_mismatched_targets():
    with pytest.raises(ValueError, match="targets"):
        token_logprobs_and_entropy(torch.zeros(4, 10), torch.zeros(5, dtype=torch.long))


def test_topk_estimate_with_the_whole_vocabulary_is_exact():
    logits = torch.randn(5, 12, generator=torch.Generator().manual_seed(4))
    logprobs = torch.log_softmax(logits, -1)
    assert torch.allclose(topk_entropy_estimate(logprobs), entropy_from_logits(logits), atol=1e-5)


def test_topk_estimate_hand_case_puts_the_residual_in_one_bucket():
    # top-1 p = 0.5, residual 0.5 as one outcome: H = ln 2
    est = topk_entropy_estimate(torch.tensor([[math.log(0.5)]]))
    assert est.item() == pytest.approx(math.log(2), abs=1e-6)
    # -inf entries are absent tokens; a residual that rounds below 0 is clamped
    est = topk_entropy_estimate(
        torch.tensor([[0.0, float("-inf")], [math.log(0.6), math.log(0.41)]])
    )
    assert torch.isfinite(est).all() and (est >= 0).all()


def test_topk_estimate_is_a_lower_bound_within_the_residual_gap():
    gen = torch.Generator().manual_seed(5)
    vocab, k = 200, 20
    logits = (
        torch.randn(300, vocab, dtype=torch.float64, generator=gen)
        * torch.rand(300, 1, dtype=torch.float64, generator=gen)
        * 4
    )
    logprobs = torch.log_softmax(logits, -1)
    top = logprobs.topk(k, dim=-1).values
    exact = entropy_from_logits(logits)
    est = topk_entropy_estimate(top)
    residual = 1 - top.exp().sum(-1)
    assert (est <= exact + 1e-9).all()
    assert (exact - est <= residual * math.log(vocab - k) + 1e-9).all()
