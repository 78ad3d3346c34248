"""Eq. 7: peak-entropy chunk selection, overlap rules, edge cases, and the batch layout."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from omniopd.algo.chunks import layout_from_spans, select_chunks

H = [0.0, 5.0, 1.0, 4.0, 3.0, 2.0, 0.0, 0.0]


def test_resample_skips_an_anchor_whose_chunk_overlaps_and_continues_down_the_ranking():
    sel = select_chunks(H, m=2, c=3, overlap="resample")
    # ranking 1 (5.0), 3 (4.0), 4 (3.0): [1, 4) chosen, [3, 6) overlaps -> skipped, [4, 7) chosen
    assert sel.spans == [(1, 4), (4, 7)]
    assert sel.anchors == [1, 4]
    assert sel.anchor_entropies == [5.0, 3.0]
    assert sel.unaudited_mask.tolist() == [True, False, False, False, False, False, False, True]
    assert sel.num_audited == 6


def test_merge_joins_overlapping_chunks_of_the_top_m_anchors():
    sel = select_chunks(H, m=2, c=3, overlap="merge")
    # anchors 1 and 3: [1, 4) and [3, 6) overlap -> one span [1, 6) with the best anchor 1
    assert sel.spans == [(1, 6)]
    assert sel.anchors == [1] and sel.anchor_entropies == [5.0]
    assert sel.num_audited == 5


def test_merge_keeps_touching_chunks_apart():
    sel = select_chunks([9.0, 0.0, 8.0, 0.0], m=2, c=2, overlap="merge")
    assert sel.spans == [(0, 2), (2, 4)]


def test_ties_go_to_the_earlier_position():
    sel = select_chunks([1.0] * 10, m=2, c=3)
    assert sel.spans == [(0, 3), (3, 6)]
    sel = select_chunks(torch.tensor([0.0, 2.0, 0.0, 2.0, 0.0]), m=1, c=1)
    assert sel.anchors == [1]


def test_chunks_are_clipped_at_the_sequence_end():
    sel = select_chunks([0.0, 0.0, 0.0, 0.0, 9.0], m=1, c=3)
    assert sel.spans == [(4, 5)]


def test_trajectory_shorter_than_one_chunk_gets_one_clipped_chunk():
    sel = select_chunks([0.1, 0.3, 0.2], m=4, c=10)
    assert sel.spans == [(1, 3)]  # every other anchor's chunk overlaps [1, 3)


def test_trajectory_shorter_than_m_chunks_returns_fewer_chunks():
    sel = select_chunks(list(range(10)), m=5, c=4)
    assert len(sel.spans) < 5
    assert sel.spans[-1] == (9, 10)  # the top anchor is the last position


def test_empty_trajectory_and_zero_chunks():
    sel = select_chunks([], m=3, c=5)
    assert sel.spans == [] and sel.audited_mask.shape == (0,) and sel.unaudited_mask.shape == (0,)
    sel = select_chunks([1.0, 2.0], m=0, c=5)
    assert sel.spans == [] and sel.unaudited_mask.tolist() == [True, True]


def test_min_start_and_valid_mask_exclude_positions_from_anchors_and_chunks():
    sel = select_chunks([9.0, 9.0, 9.0, 1.0, 2.0, 0.0], m=1, c=2, min_start=3)
    assert sel.spans == [(4, 6)]
    assert sel.unaudited_mask.tolist() == [False, False, False, True, False, False]
    # a chunk stops at the first excluded position after its anchor
    sel = select_chunks([5.0, 0.0, 0.0, 0.0], m=1, c=3, valid_mask=[True, True, False, True])
    assert sel.spans == [(0, 2)]
    assert sel.unaudited_mask.tolist() == [False, False, False, True]


def test_uniform_placement_is_reproducible_by_seed():
    values = list(np.random.default_rng(0).random(200))
    a = select_chunks(values, m=5, c=10, placement="uniform", rng=123)
    b = select_chunks(values, m=5, c=10, placement="uniform", rng=np.random.default_rng(123))
    c = select_chunks(values, m=5, c=10, placement="uniform", rng=7)
    peak = select_chunks(values, m=5, c=10)
    assert a.spans == b.spans and len(a.spans) == 5
    assert a.spans != c.spans and a.spans != peak.spans


def test_bad_arguments_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="rng"):
        select_chunks([1.0, 2.0], m=1, c=1, placement="uniform")
    with pytest.raises(ValueError, match="NaN"):
        select_chunks([1.0, float("nan")], m=1, c=1)
    with pytest.raises(ValueError, match="overlap"):
        select_chunks([1.0], m=1, c=1, overlap="union")
    with pytest.raises(ValueError, match="c >= 1"):
        select_chunks([1.0], m=1, c=0)
    with pytest.raises(ValueError, match="valid_mask"):
        select_chunks([1.0, 2.0], m=1, c=1, valid_mask=[True])


selection_args = st.fixed_dictionaries(
    {
        "entropies": st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.7]), max_size=80),
        "m": st.integers(0, 8),
        "c": st.integers(1, 12),
        "overlap": st.sampled_from(["resample", "merge"]),
        "placement": st.sampled_from(["peak", "uniform"]),
        "seed": st.integers(0, 2**16),
        "invalid": st.sets(st.integers(0, 79), max_size=20),
    }
)


def _select(args, **override):
    kwargs = {**args, **override}
    length = len(kwargs["entropies"])
    valid = [t not in kwargs["invalid"] for t in range(length)]
    return select_chunks(
        kwargs["entropies"],
        kwargs["m"],
        kwargs["c"],
        kwargs["overlap"],
        kwargs["placement"],
        rng=kwargs["seed"],
        valid_mask=valid,
    ), valid


@settings(max_examples=300, deadline=None)
@given(selection_args)
def test_spans_never_overlap_never_leave_the_sequence_and_match_the_masks(args):
    sel, valid = _select(args)
    length = len(args["entropies"])
    covered = torch.zeros(length, dtype=torch.bool)
    for (start, end), anchor in zip(sel.spans, sel.anchors, strict=True):
        assert 0 <= start <= anchor < end <= length
        assert all(valid[start:end])
        assert not covered[start:end].any()
        covered[start:end] = True
    assert sel.spans == sorted(sel.spans)
    assert torch.equal(sel.audited_mask, covered)
    assert torch.equal(sel.unaudited_mask, torch.tensor(valid, dtype=torch.bool) & ~covered)
    assert sel.num_audited <= args["m"] * args["c"]
    assert sel.anchor_entropies == [args["entropies"][a] for a in sel.anchors]


@settings(max_examples=300, deadline=None)
@given(selection_args)
def test_resample_returns_min_of_m_and_what_the_walk_can_find(args):
    sel, valid = _select(args, overlap="resample")
    unlimited, _ = _select(args, overlap="resample", m=len(args["entropies"]) + 1)
    assert len(sel.spans) == min(args["m"], len(unlimited.spans))
    assert all(end - start <= args["c"] for start, end in sel.spans)
    # each chosen chunk blocks at most 2C - 1 anchors, so the walk finds at least this many
    assert len(unlimited.spans) >= math.ceil(sum(valid) / (2 * args["c"] - 1))
    if args["placement"] == "peak" and sel.spans:
        assert max(sel.anchor_entropies) == max(
            e for e, v in zip(args["entropies"], valid, strict=True) if v
        )


@settings(max_examples=200, deadline=None)
@given(selection_args)
def test_merge_covers_every_top_m_anchor_with_at_most_m_spans(args):
    sel, valid = _select(args, overlap="merge", placement="peak")
    assert len(sel.spans) <= args["m"]
    candidates = [t for t in range(len(valid)) if valid[t]]
    ranked = sorted(candidates, key=lambda t: (-args["entropies"][t], t))[: args["m"]]
    for anchor in ranked:
        assert sel.audited_mask[anchor]


def test_layout_from_spans_numbers_chunks_and_marks_the_unaudited_response():
    layout = layout_from_spans(
        [[(3, 5), (0, 2)], [(1, 3)]], lengths=[6, 4], seq_len=8, offsets=[1, 0]
    )
    assert layout.num_chunks == 3
    assert layout.chunk_index.tolist() == [
        [-1, 0, 0, -1, 1, 1, -1, -1],
        [-1, 2, 2, -1, -1, -1, -1, -1],
    ]
    assert layout.unaudited_mask.tolist() == [
        [False, False, False, True, False, False, True, False],
        [True, False, False, True, False, False, False, False],
    ]
    assert not (layout.audited_mask & layout.unaudited_mask).any()


def test_layout_from_spans_refuses_overlapping_or_out_of_range_spans():
    with pytest.raises(ValueError, match="overlaps"):
        layout_from_spans([[(0, 3), (2, 4)]], lengths=[5], seq_len=5)
    with pytest.raises(ValueError, match="leaves"):
        layout_from_spans([[(3, 7)]], lengths=[5], seq_len=8)
    with pytest.raises(ValueError, match="exceeds"):
        layout_from_spans([[]], lengths=[5], seq_len=8, offsets=[4])
