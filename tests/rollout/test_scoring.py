"""The teacher-forced scoring pass (Eq. 6) equals a plain full forward, sliced or not."""

from __future__ import annotations

import pytest
import torch

from omniopd.algo.entropy import token_logprobs_and_entropy
from omniopd.models.loading import load_causal_lm
from omniopd.rollout.scoring import score_completions, sequence_logprobs


@pytest.fixture(scope="module")
def model(rollout_model_dir):
    return load_causal_lm(rollout_model_dir, device="cpu")


def full_forward(model, prompt, completion):
    """Reference: one unsliced forward over the whole sequence, logits [T, V] at once."""
    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logits = model(ids).logits[0]  # [L, V]
    return token_logprobs_and_entropy(logits[len(prompt) - 1 : -1], torch.tensor(completion))


def test_sliced_scores_equal_a_full_forward_for_ragged_batches(model):
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    sequences = [
        (torch.randint(0, vocab, (p,), generator=gen).tolist(), torch.randint(0, vocab, (t,), generator=gen).tolist())
        for p, t in [(5, 17), (12, 3), (1, 40), (30, 1), (7, 0)]
    ]
    for slice_tokens, batch_tokens in [(512, 16_384), (4, 16_384), (1, 60), (7, 1)]:
        scores = score_completions(model, sequences, slice_tokens=slice_tokens, batch_tokens=batch_tokens)
        assert len(scores) == len(sequences)
        for (prompt, completion), s in zip(sequences, scores, strict=True):
            assert len(s.logprobs) == len(s.entropies) == len(completion)
            if not completion:
                continue
            lp, ent = full_forward(model, prompt, completion)
            assert torch.allclose(torch.tensor(s.logprobs), lp, atol=1e-5, rtol=0)
            assert torch.allclose(torch.tensor(s.entropies), ent, atol=1e-5, rtol=0)
            assert min(s.entropies) >= 0 and max(s.logprobs) <= 0


def test_probe_logprobs_score_every_token_after_the_first(model):
    ids = [5, 9, 200, 17, 3]
    lp = sequence_logprobs(model, ids)
    ref, _ = full_forward(model, ids[:1], ids[1:])
    assert len(lp) == 4 and torch.allclose(torch.tensor(lp), ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="at least two tokens"):
        sequence_logprobs(model, [5])


def test_empty_prompt_is_an_error_not_a_wrong_score(model):
    with pytest.raises(ValueError, match="empty prompt"):
        score_completions(model, [([], [1, 2])])
