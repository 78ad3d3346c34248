"""The training figure: loss and chunk term tell apart, Pass@1 with its 95% interval."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import to_rgba

from db.repo_eval import EvalRunRecord
from omniopd.cli.plot_cmd import eval_series
from omniopd.train.plot import Curve, EvalCurve, plot_training, training_figure

STEPS = [1, 2, 3, 4, 5]


def figure(**evals):
    loss = Curve(STEPS, [1.0, 0.8, 0.7, 0.6, 0.5])
    chunk = Curve(STEPS, [1.0, 0.8, 0.7, 0.6, 0.5])  # beta = 0: the two coincide
    return training_figure(title="t", loss=loss, chunk_loss=chunk, kl=Curve(STEPS, [0.0] * 5), evals=evals or None)


def test_loss_and_chunk_term_are_distinguishable_even_where_they_coincide() -> None:
    ax_loss = figure().axes[0]
    loss, chunk = ax_loss.get_lines()
    assert np.allclose(loss.get_ydata(), chunk.get_ydata())
    assert to_rgba(loss.get_color()) != to_rgba(chunk.get_color())
    assert loss.get_linestyle() == "-" and chunk.get_linestyle() == "--"
    assert chunk.get_zorder() > loss.get_zorder() and loss.get_linewidth() > chunk.get_linewidth()
    assert [t.get_text() for t in ax_loss.get_legend().get_texts()] == ["loss (Eq. 8)", "chunk term"]


def test_pass_at_1_curve_is_drawn_with_its_95_percent_interval() -> None:
    curve = EvalCurve([0, 10, 20], [0.30, 0.45, 0.60], [0.22, 0.36, 0.52], [0.38, 0.54, 0.68])
    ax_eval = figure(**{"demo (64 items x 4)": curve}).axes[2]
    (line,) = [ln for ln in ax_eval.get_lines() if ln.get_label() == "demo (64 items x 4)"]
    assert list(line.get_xdata()) == [0, 10, 20] and np.allclose(line.get_ydata(), [30, 45, 60])
    (band,) = [c for c in ax_eval.collections if isinstance(c, PolyCollection)]
    ys = band.get_paths()[0].vertices[:, 1]
    assert np.isclose(ys.min(), 22) and np.isclose(ys.max(), 68)
    (bars,) = [c for c in ax_eval.collections if isinstance(c, LineCollection)]
    assert sorted((seg[0][1], seg[1][1]) for seg in bars.get_segments()) == [
        (22.0, 38.0), (36.0, 54.0), (52.0, 68.0)]
    assert "95% CI" in ax_eval.get_title()


def test_before_and_after_points_are_not_joined_by_a_line() -> None:
    ax_eval = figure(**{"demo (200 items x 4)": EvalCurve([0, 150], [0.36, 0.86], [0.32, 0.83], [0.40, 0.89])}).axes[2]
    (points,) = [ln for ln in ax_eval.get_lines() if ln.get_label() == "demo (200 items x 4)"]
    assert points.get_linestyle() == "None" and points.get_marker() == "s"
    assert not [c for c in ax_eval.collections if isinstance(c, PolyCollection)]  # no band either
    (bars,) = [c for c in ax_eval.collections if isinstance(c, LineCollection)]
    assert len(bars.get_segments()) == 2


def record(step, p, *, items=64, k=4, low=None, high=None, benchmark="demo", status="finished"):
    metrics = {"n_items": items, "samples_per_item": k} | ({"ci_low": low, "ci_high": high} if low is not None else {})
    return EvalRunRecord(0, f"k{step}", benchmark, "m", k, status, 1, step, step, {}, p, metrics,
                         datetime(2026, 1, 1), None)


def test_eval_series_keep_the_curve_and_the_full_evaluations_apart() -> None:
    records = [record(0, 0.30, low=0.2, high=0.4), record(0, 0.31, items=200, low=0.27, high=0.35),
               record(10, 0.45, low=0.35, high=0.55), record(10, 0.47, low=0.37, high=0.57),  # re-evaluated: later wins
               record(20, 0.9, status="running"), record(20, 0.62, items=200, low=0.58, high=0.66)]
    series = eval_series(records)
    assert series == {
        "demo (64 items x 4)": EvalCurve([0, 10], [0.30, 0.47], [0.2, 0.37], [0.4, 0.57]),
        "demo (200 items x 4)": EvalCurve([0, 20], [0.31, 0.62], [0.27, 0.58], [0.35, 0.66]),
    }
    old = eval_series([EvalRunRecord(0, "k", "math500", "m", 4, "finished", 1, 0, 5, {}, 0.3, {}, datetime(2026, 1, 1), None)])
    assert old == {"math500": EvalCurve([5], [0.3], [None], [None])}  # stored before intervals: drawn without


def test_plot_writes_a_png_with_a_single_point_series(tmp_path: Path) -> None:
    out = plot_training(tmp_path / "f.png", title="t", loss=Curve(STEPS, [1, 2, 3, 4, 5]),
                        evals={"demo": EvalCurve([0], [0.3], [0.2], [0.4]), "old": Curve([3], [0.5])})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
