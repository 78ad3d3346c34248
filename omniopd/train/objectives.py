"""The training objectives behind `loss.method`, one class each, in a plain registry.

Each objective turns examples into rows (`rows`), computes one micro-batch's loss under
the "sum" normalisation (`micro_loss`, differentiable, with additive statistics), and
turns the statistics of a whole step into metrics (`metrics`). The step (step.py) divides
every micro-batch's sum by one normaliser computed over the whole step, so gradient
accumulation gives the full batch's gradient exactly, whatever the normalisation:

    sum      -> 1                       (Eq. 8 as written, summed over the batch)
    sequence -> number of rows          (mean over trajectories; for SFT, Eq. 19's 1/N)
    token    -> number of response tokens in the step (audited + un-audited for Eq. 8)

- `omniopd` (Eq. 8): prior (Eq. 4) from the current weights, detached; proxy (Eq. 5);
  chunk loss weighted by the proxy + beta * KL(pi_ref || pi_theta) over U, in slices.
- `sft` (Eq. 1/19): teacher continuations of the audited chunks, each as its own row —
  student prompt + completion before the chunk + the continuation re-tokenised with the
  student tokenizer — or (`sft_source: trajectories`) each bundle's completion as a given
  teacher trajectory.
- `opd_whitebox` (Eq. 2): 0.5 KL(teacher || student) + 0.5 KL(student || teacher) on the
  student's own tokens, with an open-weight teacher sharing the student's tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor

from omniopd.algo.estimator import chunk_proxies
from omniopd.algo.losses import Normalisation, omniopd_loss, opd_whitebox_loss, sft_loss
from omniopd.train.collate import Padding, collate
from omniopd.train.examples import Row, TrainExample
from omniopd.train.models import PolicyModels


@dataclass(frozen=True)
class LossSettings:
    """Plain arguments of the objectives (train/settings.py builds them from the config)."""

    beta: float = 0.1
    alpha: float = 1.0
    token_slice: int = 512
    vocab_slice: int = 8192
    padding: Padding = "right"
    pad_id: int = 0
    autocast: torch.dtype | None = None
    sft_source: Literal["continuations", "trajectories"] = "continuations"


@dataclass
class Stats:
    """Statistics of micro-batches: additive `sums`, running `mins` / `maxs`."""

    sums: dict[str, float] = field(default_factory=dict)
    mins: dict[str, float] = field(default_factory=dict)
    maxs: dict[str, float] = field(default_factory=dict)

    def add(self, other: Stats) -> None:
        for k, v in other.sums.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        for k, v in other.mins.items():
            self.mins[k] = min(self.mins.get(k, v), v)
        for k, v in other.maxs.items():
            self.maxs[k] = max(self.maxs.get(k, v), v)

    def get(self, key: str) -> float:
        return self.sums.get(key, 0.0)


@dataclass(frozen=True)
class MicroLoss:
    """One micro-batch: `loss` = its differentiable sum (None when it had no rows)."""

    loss: Tensor | None
    stats: Stats
    forward_tokens: int


@dataclass(frozen=True)
class ObjectiveMetrics:
    """A step's loss (normalised), its KL to the reference per un-audited token (None when
    not computed), and the method's named parts."""

    loss: float
    kl: float | None
    parts: dict[str, float]


def normaliser(rows: Sequence[Row], how: Normalisation) -> float:
    """The step-wide divisor of every micro-batch sum (module docstring)."""
    if how == "sum":
        return 1.0
    if how == "sequence":
        return float(max(len(rows), 1))
    if how == "token":
        return float(max(sum(len(r.response) for r in rows), 1))
    raise ValueError(f"normalisation must be 'sum', 'sequence' or 'token', got {how!r}")


def _student(models: PolicyModels, batch, s: LossSettings):
    return models.student_states(batch, autocast=s.autocast)


def _frozen(models: PolicyModels, role: str, batch, s: LossSettings):
    return models.frozen_states(role, batch, autocast=s.autocast)


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


class OmniOPD:
    """Eq. 8 with the Bayesian proxy of Eq. 5 (prior of Eq. 4 from the current weights)."""

    needs_teacher_text: ClassVar[bool] = False
    needs_teacher_model: ClassVar[bool] = False

    @staticmethod
    def needs_reference(beta: float) -> bool:
        return beta > 0  # beta = 0: the reference is never loaded nor evaluated

    def rows(self, example: TrainExample, tokenizer) -> list[Row]:
        if not len(example.completion_ids):
            return []
        return [Row(example.key, example.prompt_ids, example.completion_ids, example.chunks)]

    def micro_loss(self, models: PolicyModels, rows: Sequence[Row], s: LossSettings) -> MicroLoss:
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
        student = _student(models, batch, s)
        reference = None
        if s.beta > 0:
            reference = _frozen(models, "reference", batch, s)
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
            "proxy_mean": _ratio(st.get("proxy_sum"), chunks),
            "proxy_min": st.mins.get("proxy", 0.0),
            "proxy_max": st.maxs.get("proxy", 0.0),
            "prior_mean": _ratio(st.get("prior_sum"), chunks),
            "frequentist_mean": _ratio(st.get("frequentist_sum"), chunks),
            "chunks": chunks,
            "audited_tokens": audited,
            "unaudited_tokens": unaudited,
            "audited_fraction": _ratio(audited, audited + unaudited),
        }
        kl = _ratio(st.get("kl_sum"), unaudited) if beta > 0 else None
        return ObjectiveMetrics(parts["chunk_loss"] + parts["kl_term"], kl, parts)


class SFT:
    """Eq. 1 / Eq. 19 on teacher text (continuations of the audited chunks, or trajectories)."""

    needs_teacher_model: ClassVar[bool] = False

    def __init__(self, source: Literal["continuations", "trajectories"] = "continuations") -> None:
        if source not in ("continuations", "trajectories"):
            raise ValueError(f"sft source must be continuations or trajectories, got {source!r}")
        self.source = source
        self.needs_teacher_text = source == "continuations"

    @staticmethod
    def needs_reference(beta: float) -> bool:
        return False

    def rows(self, example: TrainExample, tokenizer) -> list[Row]:
        if self.source == "trajectories":  # the completion is itself a teacher trajectory
            return [Row(example.key, example.prompt_ids, example.completion_ids)] if len(example.completion_ids) else []
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
        if not rows:
            return MicroLoss(None, Stats(), 0)
        batch = collate(rows, pad_id=s.pad_id, padding=s.padding)
        mask = batch.response_mask().to(models.device)  # [B, L] teacher tokens
        out = sft_loss(
            _student(models, batch, s), batch.targets.to(models.device), mask,
            normalisation="sum", token_slice=s.token_slice, vocab_slice=s.vocab_slice,
        )
        stats = Stats(sums={"nll_sum": float(out.loss.detach()), "teacher_tokens": out.tokens, "rows": len(rows)})
        return MicroLoss(out.loss, stats, batch.forward_tokens)

    def metrics(self, st: Stats, norm: float, beta: float) -> ObjectiveMetrics:
        parts = {
            "nll_per_token": _ratio(st.get("nll_sum"), st.get("teacher_tokens")),
            "teacher_tokens": st.get("teacher_tokens"),
            "rows": st.get("rows"),
        }
        return ObjectiveMetrics(st.get("nll_sum") / norm, None, parts)


class WhiteboxOPD:
    """Eq. 2, balanced: 0.5 forward + 0.5 reverse KL to an open-weight teacher, student tokens."""

    needs_teacher_text: ClassVar[bool] = False
    needs_teacher_model: ClassVar[bool] = True
    forward_weight: ClassVar[float] = 0.5  # the paper's 0.5 fwd + 0.5 rev (§5.1)

    @staticmethod
    def needs_reference(beta: float) -> bool:
        return False

    def rows(self, example: TrainExample, tokenizer) -> list[Row]:
        return [Row(example.key, example.prompt_ids, example.completion_ids)] if len(example.completion_ids) else []

    def micro_loss(self, models: PolicyModels, rows: Sequence[Row], s: LossSettings) -> MicroLoss:
        if not rows:
            return MicroLoss(None, Stats(), 0)
        batch = collate(rows, pad_id=s.pad_id, padding=s.padding)
        mask = batch.response_mask().to(models.device)  # [B, L] the student's own tokens
        out = opd_whitebox_loss(
            _student(models, batch, s), _frozen(models, "teacher", batch, s), mask,
            forward_weight=self.forward_weight, normalisation="sum",
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
            "forward_kl": _ratio(st.get("forward_kl_sum"), tokens),
            "reverse_kl": _ratio(st.get("reverse_kl_sum"), tokens),
            "tokens": tokens,
        }
        return ObjectiveMetrics(st.get("loss_sum") / norm, None, parts)


Objective = OmniOPD | SFT | WhiteboxOPD

OBJECTIVES = {
    "omniopd": lambda sft_source: OmniOPD(),
    "sft": lambda sft_source: SFT(sft_source),
    "opd_whitebox": lambda sft_source: WhiteboxOPD(),
}
"""loss.method -> factory(sft_source). The learner never branches on the method's name."""


def make_objective(method: str, sft_source: Literal["continuations", "trajectories"] = "continuations") -> Objective:
    if method not in OBJECTIVES:
        raise ValueError(f"loss.method {method!r}: expected one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[method](sft_source)
