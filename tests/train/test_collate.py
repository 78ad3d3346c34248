"""Collation: shifted targets, prompt tokens outside every loss mask, padding invariance,
and hidden states that are exactly what the output layer multiplies."""

from __future__ import annotations

import pytest
import torch

from omniopd.algo.sliced import token_stats
from omniopd.models.loading import load_causal_lm
from omniopd.objectives.collate import collate
from omniopd.objectives.examples import AuditedChunk, Row
from omniopd.train.forward import final_hidden, logit_source


def rows():
    return [
        Row(0, [5, 6, 7], [8, 9, 10, 11], (AuditedChunk(1, 3, 1.0, 2),)),
        Row(1, [20], [21, 22]),
        Row(2, [30, 31, 32, 33, 34], [35, 36, 37, 38, 39, 40]),
    ]


@pytest.mark.parametrize("padding", ["right", "left"])
def test_targets_are_shifted_and_only_response_tokens_are_in_the_loss_mask(padding):
    batch = collate(rows(), pad_id=0, padding=padding)
    mask = batch.response_mask()
    for b, row in enumerate(rows()):
        assert batch.targets[b][mask[b]].tolist() == list(row.response)
        offset = batch.response_offsets[b]
        # the column before the response predicts the first response token from the last prompt token
        assert batch.input_ids[b, offset].item() == row.context[-1]
    assert int(mask.sum()) == batch.response_tokens == 12
    layout = batch.layout(rows())
    assert layout.num_chunks == 1
    assert batch.targets[0][layout.audited_mask[0]].tolist() == [9, 10]
    # U = response tokens outside chunks; prompt and padding are in neither set
    assert int(layout.unaudited_mask.sum()) == 12 - 2
    assert not (layout.unaudited_mask & ~mask).any()


def test_collate_refuses_rows_without_a_context():
    with pytest.raises(ValueError, match="empty context"):
        collate([Row(0, [], [1, 2])], pad_id=0)


def test_left_and_right_padding_give_the_same_response_logprobs(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir, dtype="float32", device="cpu")
    got = {}
    for padding in ("right", "left"):
        batch = collate(rows(), pad_id=0, padding=padding)
        source = logit_source(model, final_hidden(model, batch))
        lp = token_stats(source, batch.targets, batch.response_mask()).logprobs
        got[padding] = [lp[b][batch.response_mask()[b]] for b in range(3)]
    for right, left in zip(got["right"], got["left"], strict=True):
        torch.testing.assert_close(right, left, atol=1e-5, rtol=1e-5)


def test_hidden_states_times_the_output_layer_are_the_models_logits(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir, dtype="float32", device="cpu")
    batch = collate(rows()[:1], pad_id=0)
    source = logit_source(model, final_hidden(model, batch))
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(source.hidden @ source.weight.T, logits, atol=1e-5, rtol=1e-5)
