"""Peak-entropy chunk selection (Eq. 7 of the OmniOPD paper) and its uniform ablation.

    A = argmax_{A subset of {1..T}, |A| = M} sum_{t in A} H_t                      (Eq. 7)

Each anchor t in A starts a chunk [t, t + C) of the student trajectory; the chunks are what
the teacher audits. The paper leaves the details open; this module fixes them:

- Ranking (`placement="peak"`): positions in descending entropy; ties go to the earlier
  position (a stable sort), so the selection is a deterministic function of the entropies.
  `placement="uniform"` (ablation "w/o entropy selection") ranks the candidate positions in
  a random order drawn from the `rng` argument instead, and is reproducible by seed.
- Chunk extent: [anchor, anchor + C), clipped at the end of the sequence, or at the end of
  the run of valid positions that contains the anchor when `valid_mask` is given. So a chunk
  never covers an excluded position, and chunks near the end may be shorter than C.
- Overlap, `resample`: walk down the ranking; an anchor whose chunk would overlap an already
  chosen chunk is skipped and the next one is tried, until M chunks are chosen or the ranking
  is exhausted. Result: min(M, G) chunks of at most C tokens, where G is what the walk finds
  with no limit (G >= ceil(valid positions / (2C - 1)), since each chosen chunk blocks at most
  2C - 1 anchors).
- Overlap, `merge`: take the top-M anchors exactly as Eq. 7 says, form their chunks, and join
  chunks that overlap (share a position) into one span. M then counts anchors, not spans:
  there are at most M spans, a span can be longer than C, and at most M * C tokens are
  audited. Touching chunks ([0, 50) and [50, 100)) stay separate.
- Short trajectories: with fewer valid positions than M * C the walk simply returns fewer
  chunks; an empty trajectory (or M = 0) returns no chunks and empty masks.
- Excluded positions (`valid_mask` False, or before `min_start`, e.g. prompt tokens) are never
  anchors and never audited; they are in neither `audited_mask` nor `unaudited_mask`.

For a training batch, `layout_from_spans` turns the spans of B trajectories into one
`ChunkLayout` (chunk ids and the un-audited set U as [B, T] tensors), which the estimator and
the losses take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class ChunkSelection:
    """The audited chunks of one trajectory of T tokens.

    Invariants: `spans` are half-open [start, end) intervals, sorted by start, pairwise
    disjoint, with 0 <= start < end <= T; `anchors[i]` (the highest-entropy anchor inside span
    i) and `anchor_entropies[i]` belong to `spans[i]` (same length); `unaudited_mask` [T] is
    True exactly at valid positions that lie in no span; `audited_mask` [T] at those in a span.
    """

    spans: list[tuple[int, int]]
    anchors: list[int]
    anchor_entropies: list[float]
    audited_mask: Tensor  # [T] bool
    unaudited_mask: Tensor  # [T] bool

    @property
    def num_audited(self) -> int:
        return int(self.audited_mask.sum())


def _as_array(entropies: Tensor | Sequence[float]) -> np.ndarray:
    if isinstance(entropies, Tensor):
        values = entropies.detach().to("cpu", torch.float64).numpy()
    else:
        values = np.asarray(entropies, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"entropies must be one trajectory, shape [T]; got shape {values.shape}")
    if np.isnan(values).any():
        raise ValueError("entropies contain NaN; compute them from finite logits")
    return values


def _run_ends(valid: np.ndarray) -> np.ndarray:
    """For every position, the end (exclusive) of the run of valid positions containing it."""
    ends = np.empty(len(valid), dtype=np.int64)
    end = len(valid)
    for t in range(len(valid) - 1, -1, -1):
        if not valid[t]:
            end = t
        ends[t] = end
    return ends


def _ranking(values: np.ndarray, candidates: np.ndarray, placement: str, rng) -> np.ndarray:
    if placement == "peak":
        # Stable sort on -H: equal entropies keep ascending position order (earlier first).
        return candidates[np.argsort(-values[candidates], kind="stable")]
    if placement == "uniform":
        if rng is None:
            raise ValueError("placement='uniform' needs rng (a seed or numpy Generator) to be reproducible")
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return generator.permutation(candidates)
    raise ValueError(f"placement must be 'peak' or 'uniform', got {placement!r}")


def _resample(order: np.ndarray, ends: np.ndarray, m: int, c: int) -> list[tuple[int, int, int]]:
    """Greedy walk down the ranking, skipping anchors whose chunk overlaps a chosen one."""
    taken = np.zeros(len(ends), dtype=bool)
    chosen: list[tuple[int, int, int]] = []  # (start, end, anchor)
    for anchor in order:
        if len(chosen) == m:
            break
        end = int(min(anchor + c, ends[anchor]))
        if not taken[anchor:end].any():
            taken[anchor:end] = True
            chosen.append((int(anchor), end, int(anchor)))
    return chosen


def _merge(order: np.ndarray, ends: np.ndarray, values: np.ndarray, m: int, c: int) -> list[tuple[int, int, int]]:
    """Top-M anchors, chunks joined where they overlap; each span keeps its best anchor."""
    chunks = sorted((int(a), int(min(a + c, ends[a]))) for a in order[:m])
    spans: list[list[int]] = []  # [start, end, anchor]
    for start, end in chunks:
        if spans and start < spans[-1][1]:
            span = spans[-1]
            span[1] = max(span[1], end)
            # Best anchor of the merged span: highest entropy, earlier on ties.
            if values[start] > values[span[2]]:
                span[2] = start
        else:
            spans.append([start, end, start])
    return [(s, e, a) for s, e, a in spans]


def select_chunks(
    entropies: Tensor | Sequence[float],
    m: int,
    c: int,
    overlap: Literal["resample", "merge"] = "resample",
    placement: Literal["peak", "uniform"] = "peak",
    rng: np.random.Generator | int | None = None,
    *,
    valid_mask: Tensor | Sequence[bool] | None = None,
    min_start: int = 0,
) -> ChunkSelection:
    """Choose the audited chunks of one trajectory (Eq. 7); rules in the module docstring.

    entropies: [T] per-token entropies H_t (Eq. 6). m: M, number of chunks (anchors for
    `merge`); c: C, tokens per chunk. rng: seed or numpy Generator, required for `uniform`.
    valid_mask: [T] bool, positions that may be audited (default all); min_start: positions
    before it are excluded too (e.g. the prompt when entropies cover prompt + response).
    """
    if m < 0 or c < 1:
        raise ValueError(f"need m >= 0 and c >= 1 (chunk length in tokens); got m={m}, c={c}")
    if overlap not in ("resample", "merge"):
        raise ValueError(f"overlap must be 'resample' or 'merge', got {overlap!r}")
    values = _as_array(entropies)  # [T]
    length = len(values)
    valid = np.ones(length, dtype=bool) if valid_mask is None else np.asarray(valid_mask, dtype=bool).reshape(-1)
    if valid.shape != (length,):
        raise ValueError(f"valid_mask has {valid.shape[0]} entries but entropies have {length}")
    valid = valid.copy()
    valid[: max(min_start, 0)] = False
    order = _ranking(values, np.flatnonzero(valid), placement, rng)
    ends = _run_ends(valid)
    picked = _resample(order, ends, m, c) if overlap == "resample" else _merge(order, ends, values, m, c)
    picked.sort()
    audited = torch.zeros(length, dtype=torch.bool)
    for start, end, _ in picked:
        audited[start:end] = True
    return ChunkSelection(
        spans=[(s, e) for s, e, _ in picked],
        anchors=[a for _, _, a in picked],
        anchor_entropies=[float(values[a]) for _, _, a in picked],
        audited_mask=audited,
        unaudited_mask=torch.from_numpy(valid) & ~audited,
    )


@dataclass(frozen=True)
class ChunkLayout:
    """Where a batch's audited chunks lie.

    chunk_index: [B, T] long, the chunk id 0..K-1 (numbered sequence by sequence, by start)
    at audited positions, -1 elsewhere; unaudited_mask: [B, T] bool, response positions in no
    chunk (the set U of Eq. 8). A position is never both audited and un-audited.
    """

    chunk_index: Tensor
    unaudited_mask: Tensor
    num_chunks: int

    @property
    def audited_mask(self) -> Tensor:
        return self.chunk_index >= 0  # [B, T]


def layout_from_spans(
    spans: Sequence[Sequence[tuple[int, int]]],
    lengths: Sequence[int],
    seq_len: int,
    offsets: Sequence[int] | None = None,
) -> ChunkLayout:
    """Build a ChunkLayout from per-sequence chunk spans.

    spans[b]: [start, end) spans relative to the start of response b (e.g. ChunkSelection.spans);
    lengths[b]: response length; response b occupies columns [offsets[b], offsets[b] +
    lengths[b]) of the [B, seq_len] layout (offsets default to 0).
    """
    offsets = [0] * len(lengths) if offsets is None else offsets
    chunk_index = torch.full((len(lengths), seq_len), -1, dtype=torch.long)
    unaudited = torch.zeros((len(lengths), seq_len), dtype=torch.bool)
    k = 0
    for b, (seq_spans, length, offset) in enumerate(zip(spans, lengths, offsets, strict=True)):
        if offset + length > seq_len:
            raise ValueError(f"sequence {b}: response [{offset}, {offset + length}) exceeds seq_len {seq_len}")
        unaudited[b, offset : offset + length] = True
        for start, end in sorted(seq_spans):
            if not 0 <= start < end <= length or (chunk_index[b, offset + start : offset + end] >= 0).any():
                raise ValueError(f"sequence {b}: span [{start}, {end}) is empty, overlaps another, or leaves [0, {length})")
            chunk_index[b, offset + start : offset + end] = k
            k += 1
    return ChunkLayout(chunk_index, unaudited & (chunk_index < 0), k)
