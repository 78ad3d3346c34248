"""The paper's Fig. 3 panels for one run: on-policy loss, KL to the base model, and eval
accuracy, against learner step. Pure: lists in, PNG out (matplotlib's Agg canvas, no pyplot
state, no display needed)."""

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


def plot_training(
    out: str | Path,
    *,
    title: str,
    loss: Curve,
    chunk_loss: Curve | None = None,
    kl: Curve | None = None,
    evals: Mapping[str, Curve] | None = None,
) -> Path:
    """Write the figure: loss (and its chunk term), KL(pi_ref || pi_theta) per un-audited
    token, and Pass@1 per benchmark when evaluations exist (the panel says so otherwise)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.2), layout="constrained")
    ax_loss, ax_kl, ax_eval = fig.subplots(1, 3)
    ax_loss.plot(loss.steps, loss.values, label="loss (Eq. 8)", color="tab:blue")
    if chunk_loss is not None and len(chunk_loss.steps):
        ax_loss.plot(chunk_loss.steps, chunk_loss.values, label="chunk term", color="tab:cyan", alpha=0.8)
    ax_loss.set_title("on-policy loss")
    ax_loss.legend(loc="best")
    if kl is not None and len(kl.steps):
        ax_kl.plot(kl.steps, kl.values, color="tab:orange")
    else:
        _empty(ax_kl, "no KL recorded (beta = 0 or a method without an anchor)")
    ax_kl.set_title("KL(base || student) per un-audited token")
    if evals:
        for name, curve in sorted(evals.items()):
            ax_eval.plot(curve.steps, [100 * v for v in curve.values], marker="o", label=name)
        ax_eval.legend(loc="best")
    else:
        _empty(ax_eval, "no evaluations of this run's checkpoints yet")
    ax_eval.set_title("eval accuracy (Pass@1, %)")
    for ax in (ax_loss, ax_kl, ax_eval):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray", wrap=True)
