"""`sft` (Eq. 1 / Eq. 19): the negative log-likelihood of teacher text, in two variants
chosen by `loss.sft_source` (omniopd/objectives/__init__.py: `objective_class`):

- `continuations` (SFT): every teacher continuation of every audited chunk is its own row —
  student prompt + the student's completion before the chunk + the continuation
  re-tokenised with the student tokenizer (Eq. 19 at the student's states). Needs audits
  and their texts.
- `trajectories` (SFTOnTrajectories): each bundle's completion is a given teacher
  trajectory. Needs neither audits nor texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from omniopd.objectives.base import (
    LossSettings,
    MicroLoss,
    Needs,
    ObjectiveMetrics,
    Stats,
    completion_row,
    ratio,
)

if TYPE_CHECKING:
    from omniopd.objectives.examples import Row, TrainExample
    from omniopd.train.models import PolicyModels


class SFT:
    """Eq. 1 / Eq. 19 on the teacher continuations of the audited chunks."""

    needs: ClassVar[Needs] = Needs(audits=True, teacher_texts=True)

    def rows(self, example: TrainExample, tokenizer) -> list[Row]:
        from omniopd.objectives.examples import Row

        rows = []
        for chunk in example.chunks:
            if not chunk.teacher_texts:
                raise ValueError(
                    f"example {example.key}: sft on continuations needs the teacher texts of its audited "
                    "chunks (claim bundles with samples)"
                )
            # Eq. 19 with the student's context: prompt + the student's tokens before the chunk.
            context = [*example.prompt_ids, *example.completion_ids[: chunk.start]]
            for text in chunk.teacher_texts:
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                if ids:
                    rows.append(Row(example.key, context, ids))
        return rows

    def micro_loss(self, models: PolicyModels, rows: Sequence[Row], s: LossSettings) -> MicroLoss:
        from omniopd.algo.losses import sft_loss
        from omniopd.objectives.collate import collate

        if not rows:
            return MicroLoss(None, Stats(), 0)
        batch = collate(rows, pad_id=s.pad_id, padding=s.padding)
        mask = batch.response_mask().to(models.device)  # [B, L] teacher tokens
        out = sft_loss(
            models.student_states(batch, autocast=s.autocast), batch.targets.to(models.device), mask,
            normalisation="sum", token_slice=s.token_slice, vocab_slice=s.vocab_slice,
        )
        stats = Stats(sums={"nll_sum": float(out.loss.detach()), "teacher_tokens": out.tokens, "rows": len(rows)})
        return MicroLoss(out.loss, stats, batch.forward_tokens)

    def metrics(self, st: Stats, norm: float, beta: float) -> ObjectiveMetrics:
        parts = {
            "nll_per_token": ratio(st.get("nll_sum"), st.get("teacher_tokens")),
            "teacher_tokens": st.get("teacher_tokens"),
            "rows": st.get("rows"),
        }
        return ObjectiveMetrics(st.get("nll_sum") / norm, None, parts)


class SFTOnTrajectories(SFT):
    """Eq. 1 on given teacher trajectories: each bundle's completion is one, whole."""

    needs: ClassVar[Needs] = Needs()

    def rows(self, example: TrainExample, tokenizer) -> list[Row]:
        return completion_row(example)
