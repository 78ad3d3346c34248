"""`opd_whitebox` (Eq. 2, the paper's balanced variant): 0.5 KL(teacher || student) +
0.5 KL(student || teacher) on the student's own tokens, with an open-weight teacher that
shares the student's tokenizer (checked when it is loaded, omniopd/train/models.py)."""

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


class WhiteboxOPD:
    """Eq. 2, balanced: 0.5 forward + 0.5 reverse KL to an open-weight teacher, student tokens."""

    needs: ClassVar[Needs] = Needs(teacher_logits=True)
    forward_weight: ClassVar[float] = 0.5  # the paper's 0.5 fwd + 0.5 rev (§5.1)

    def rows(self, example: TrainExample, tokenizer) -> list[Row]:
        return completion_row(example)

    def micro_loss(self, models: PolicyModels, rows: Sequence[Row], s: LossSettings) -> MicroLoss:
        from omniopd.algo.losses import opd_whitebox_loss
        from omniopd.objectives.collate import collate

        if not rows:
            return MicroLoss(None, Stats(), 0)
        batch = collate(rows, pad_id=s.pad_id, padding=s.padding)
        mask = batch.response_mask().to(models.device)  # [B, L] the student's own tokens
        out = opd_whitebox_loss(
            models.student_states(batch, autocast=s.autocast), models.frozen_states("teacher", batch, autocast=s.autocast),
            mask, forward_weight=self.forward_weight, normalisation="sum",
            token_slice=s.token_slice, vocab_slice=s.vocab_slice,
        )
        stats = Stats(sums={
            "loss_sum": float(out.loss.detach()),
            "forward_kl_sum": out.forward_kl * out.tokens,
            "reverse_kl_sum": out.reverse_kl * out.tokens,
            "tokens": out.tokens,
        })
        return MicroLoss(out.loss, stats, batch.forward_tokens)

    def metrics(self, st: Stats, norm: float, beta: float) -> ObjectiveMetrics:
        tokens = st.get("tokens")
        parts = {
            "forward_kl": ratio(st.get("forward_kl_sum"), tokens),
            "reverse_kl": ratio(st.get("reverse_kl_sum"), tokens),
            "tokens": tokens,
        }
        return ObjectiveMetrics(st.get("loss_sum") / norm, None, parts)
