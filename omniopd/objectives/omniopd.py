"""`omniopd` (Eq. 8): the chunk log-likelihood weighted by the Bayesian proxy (Eq. 5, prior
of Eq. 4 from the current weights, detached) plus beta * KL(pi_ref || pi_theta) over the
un-audited tokens U, computed in slices (omniopd/algo/sliced.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from omniopd.objectives.base import LossSettings, MicroLoss, Needs, ObjectiveMetrics, Stats, ratio

if TYPE_CHECKING:
    from omniopd.objectives.examples import Row, TrainExample
    from omniopd.train.models import PolicyModels


class OmniOPD:
    """Eq. 8 with the Bayesian proxy of Eq. 5 (prior of Eq. 4 from the current weights)."""

    needs: ClassVar[Needs] = Needs(audits=True, kl_anchor=True)

    def rows(self, example: TrainExample, tokenizer) -> list[Row]:
        from omniopd.objectives.examples import Row

        if not len(example.completion_ids):
            return []
        return [Row(example.key, example.prompt_ids, example.completion_ids, example.chunks)]

    def micro_loss(self, models: PolicyModels, rows: Sequence[Row], s: LossSettings) -> MicroLoss:
        import torch

        from omniopd.algo.estimator import chunk_proxies
        from omniopd.algo.losses import omniopd_loss
        from omniopd.objectives.collate import collate

        if not rows:
            return MicroLoss(None, Stats(), 0)
        batch = collate(rows, pad_id=s.pad_id, padding=s.padding)
        device = models.device
        layout = batch.layout(rows).to(device)
        targets = batch.targets.to(device)  # [B, L]
        chunks = [c for row in rows for c in row.chunks]
        k_sem = torch.tensor([c.k_sem for c in chunks], dtype=torch.float32, device=device)  # [K]
        n = torch.tensor([c.n for c in chunks], dtype=torch.float32, device=device)  # [K]
        slices = {"token_slice": s.token_slice, "vocab_slice": s.vocab_slice}
        student = models.student_states(batch, autocast=s.autocast)
        reference = None
        if s.beta > 0:
            reference = models.frozen_states("reference", batch, autocast=s.autocast)
        est = chunk_proxies(student, targets, layout, k_sem, n, s.alpha, **slices)  # Eq. 4-5, detached
        out = omniopd_loss(
            student, reference, targets, layout, est.proxy, beta=s.beta, normalisation="sum", **slices
        )
        stats = Stats(
            sums={
                "chunk_loss": out.chunk_loss,
                "kl_term": out.kl_term,
                "kl_sum": out.kl * out.unaudited_tokens,
                "audited_tokens": out.audited_tokens,
                "unaudited_tokens": out.unaudited_tokens,
                "chunks": len(chunks),
                "proxy_sum": float(est.proxy.sum()),
                "prior_sum": float(est.prior.sum()),
                "frequentist_sum": float(est.frequentist.sum()),
            },
        )
        if chunks:
            stats.mins["proxy"], stats.maxs["proxy"] = float(est.proxy.min()), float(est.proxy.max())
        return MicroLoss(out.loss, stats, batch.forward_tokens)

    def metrics(self, st: Stats, norm: float, beta: float) -> ObjectiveMetrics:
        chunks, audited, unaudited = st.get("chunks"), st.get("audited_tokens"), st.get("unaudited_tokens")
        parts = {
            "chunk_loss": st.get("chunk_loss") / norm,
            "kl_term": st.get("kl_term") / norm,
            "proxy_mean": ratio(st.get("proxy_sum"), chunks),
            "proxy_min": st.mins.get("proxy", 0.0),
            "proxy_max": st.maxs.get("proxy", 0.0),
            "prior_mean": ratio(st.get("prior_sum"), chunks),
            "frequentist_mean": ratio(st.get("frequentist_sum"), chunks),
            "chunks": chunks,
            "audited_tokens": audited,
            "unaudited_tokens": unaudited,
            "audited_fraction": ratio(audited, audited + unaudited),
        }
        kl = ratio(st.get("kl_sum"), unaudited) if beta > 0 else None
        return ObjectiveMetrics(parts["chunk_loss"] + parts["kl_term"], kl, parts)
