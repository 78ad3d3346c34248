"""Rows -> one padded, shifted batch for a causal LM (prompt tokens carry no loss).

A row is context + response. The model reads `input_ids` = (context + response)[:-1] and
column j of its output predicts `targets[:, j]` = (context + response)[1:][j], so response
token s of row b sits at column `response_offsets[b] + s` with
`response_offsets[b] = start_b + len(context_b) - 1` (start_b = 0 with right padding).
Loss masks are built from these offsets: context and padding columns are in no mask.

Right padding (default) needs nothing else: causal attention never lets a real position
see the padding after it. Left padding passes explicit `position_ids` (0 at the first real
token) so a row's positions, and hence its outputs, do not depend on its batch mates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from omniopd.algo.chunks import ChunkLayout, layout_from_spans
from omniopd.objectives.examples import Row

Padding = Literal["right", "left"]


@dataclass(frozen=True)
class Batch:
    """B rows padded to L columns.

    input_ids, attention_mask, position_ids, targets: [B, L] long; column j of the model's
    output predicts targets[:, j]. Row b's response occupies columns
    [response_offsets[b], response_offsets[b] + response_lengths[b]).
    """

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    targets: Tensor
    response_offsets: tuple[int, ...]
    response_lengths: tuple[int, ...]

    @property
    def forward_tokens(self) -> int:
        """Real (non-padding) tokens the model reads."""
        return int(self.attention_mask.sum())

    @property
    def response_tokens(self) -> int:
        return sum(self.response_lengths)

    def response_mask(self) -> Tensor:
        """[B, L] bool: the columns that predict a response token."""
        mask = torch.zeros_like(self.targets, dtype=torch.bool)
        for b, (offset, length) in enumerate(
            zip(self.response_offsets, self.response_lengths, strict=True)
        ):
            mask[b, offset : offset + length] = True
        return mask

    def layout(self, rows: Sequence[Row]) -> ChunkLayout:
        """The audited chunks of `rows` (the rows this batch was built from) and U (Eq. 8)."""
        spans = [[(c.start, c.end) for c in row.chunks] for row in rows]
        return layout_from_spans(
            spans, self.response_lengths, seq_len=self.targets.shape[1], offsets=self.response_offsets
        )

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            self.targets.to(device),
            self.response_offsets,
            self.response_lengths,
        )


def collate(rows: Sequence[Row], *, pad_id: int, padding: Padding = "right") -> Batch:
    """Pad `rows` into one Batch (see the module docstring for the column layout)."""
    if padding not in ("right", "left"):
        raise ValueError(f"padding must be 'right' or 'left', got {padding!r}")
    if not rows:
        raise ValueError("collate needs at least one row")
    full = [list(row.context) + list(row.response) for row in rows]
    for row, seq in zip(rows, full, strict=True):
        if len(row.context) == 0:
            raise ValueError(f"row of example {row.example}: empty context (nothing predicts the first token)")
        if len(seq) < 2:
            raise ValueError(f"row of example {row.example}: a sequence needs at least 2 tokens")
    width = max(len(seq) - 1 for seq in full)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [B, L]
    targets = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [B, L]
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, L]
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)  # [B, L]
    offsets = []
    for b, (row, seq) in enumerate(zip(rows, full, strict=True)):
        n = len(seq) - 1
        start = 0 if padding == "right" else width - n
        input_ids[b, start : start + n] = torch.tensor(seq[:-1])
        targets[b, start : start + n] = torch.tensor(seq[1:])
        attention_mask[b, start : start + n] = 1
        position_ids[b, start : start + n] = torch.arange(n)
        offsets.append(start + len(row.context) - 1)
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        targets=targets,
        response_offsets=tuple(offsets),
        response_lengths=tuple(len(row.response) for row in rows),
    )
