"""The paper's Fig. 3 panels for one run: on-policy loss, KL to the base model, and eval
accuracy, against learner step. Pure: lists in, PNG out (matplotlib's Agg canvas, no pyplot
state, no display needed).

The loss panel draws the loss (Eq. 8) as a thick solid line and its chunk term as a thin
dashed one in another colour on top: with a small beta the two nearly coincide, and the
gap between them is the anchor's beta * KL. The accuracy panel draws each evaluation series
(one benchmark at one item count and k, e.g. the evaluator's curve and the before/after
evaluations of the whole held-out set) as points with their 95% bootstrap interval: error
bars on every point; a series of three points or more is a curve (joined, with a band),
fewer are unjoined squares (no line claims a path between before and after).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Curve:
    """y against step; steps and values have one length."""

    steps: Sequence[int]
    values: Sequence[float]

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.values):
            raise ValueError(f"a curve needs one value per step ({len(self.steps)} vs {len(self.values)})")


@dataclass(frozen=True)
class EvalCurve:
    """Pass@1 (fractions) against step with its interval: `low[i] <= values[i] <= high[i]`,
    all four sequences of one length; `low`/`high` are None where no interval was stored."""

    steps: Sequence[int]
    values: Sequence[float]
    low: Sequence[float | None]
    high: Sequence[float | None]

    def __post_init__(self) -> None:
        if not len(self.steps) == len(self.values) == len(self.low) == len(self.high):
            raise ValueError("an eval curve needs one value and one interval per step")


LOSS_STYLE = {"color": "tab:blue", "linestyle": "-", "linewidth": 2.4}
CHUNK_STYLE = {"color": "tab:red", "linestyle": "--", "linewidth": 1.3}


def training_figure(
    *,
    title: str,
    loss: Curve,
    chunk_loss: Curve | None = None,
    kl: Curve | None = None,
    evals: Mapping[str, EvalCurve | Curve] | None = None,
):
    """The figure (a matplotlib Figure): loss (and its chunk term), KL(pi_ref || pi_theta)
    per un-audited token, and Pass@1 per evaluation series when there are any (the panel
    says so otherwise)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.2), layout="constrained")
    ax_loss, ax_kl, ax_eval = fig.subplots(1, 3)
    ax_loss.plot(loss.steps, loss.values, label="loss (Eq. 8)", zorder=2, **LOSS_STYLE)
    if chunk_loss is not None and len(chunk_loss.steps):
        ax_loss.plot(chunk_loss.steps, chunk_loss.values, label="chunk term", zorder=3, **CHUNK_STYLE)
    ax_loss.set_title("on-policy loss")
    ax_loss.legend(loc="best")
    if kl is not None and len(kl.steps):
        ax_kl.plot(kl.steps, kl.values, color="tab:orange")
    else:
        _empty(ax_kl, "no KL recorded (beta = 0 or a method without an anchor)")
    ax_kl.set_title("KL(base || student) per un-audited token")
    if evals:
        for name, curve in sorted(evals.items()):
            _eval_series(ax_eval, name, curve)
        ax_eval.legend(loc="best", fontsize="small")
    else:
        _empty(ax_eval, "no evaluations of this run's checkpoints yet")
    ax_eval.set_title("eval accuracy (Pass@1, %, 95% CI)")
    for ax in (ax_loss, ax_kl, ax_eval):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def plot_training(
    out: str | Path,
    *,
    title: str,
    loss: Curve,
    chunk_loss: Curve | None = None,
    kl: Curve | None = None,
    evals: Mapping[str, EvalCurve | Curve] | None = None,
) -> Path:
    """Write `training_figure(...)` as a PNG to `out`."""
    fig = training_figure(title=title, loss=loss, chunk_loss=chunk_loss, kl=kl, evals=evals)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def _eval_series(ax, name: str, curve: EvalCurve | Curve) -> None:
    if not isinstance(curve, EvalCurve):
        curve = EvalCurve(curve.steps, curve.values, [None] * len(curve.steps), [None] * len(curve.steps))
    pct = [100 * v for v in curve.values]
    # Points of a curve are joined; two or fewer (before / after training) are not: a straight
    # line between them would claim a path nobody measured.
    joined = len(curve.steps) > 2
    line = ax.plot(curve.steps, pct, marker="o" if joined else "s", linestyle="-" if joined else "none",
                   label=name)[0]
    known = [i for i, (lo, hi) in enumerate(zip(curve.low, curve.high, strict=True)) if lo is not None and hi is not None]
    if not known:
        return
    steps = [curve.steps[i] for i in known]
    low = [100 * curve.low[i] for i in known]
    high = [100 * curve.high[i] for i in known]
    mid = [pct[i] for i in known]
    ax.errorbar(steps, mid, yerr=[[m - lo for m, lo in zip(mid, low, strict=True)],
                                  [hi - m for m, hi in zip(mid, high, strict=True)]],
                fmt="none", ecolor=line.get_color(), capsize=3, alpha=0.8)
    if joined and len(known) > 2:
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray", wrap=True)
