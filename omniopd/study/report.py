"""The estimator study's Table 3-shaped Markdown (beside the paper's numbers) and its plot."""

from __future__ import annotations

from pathlib import Path

from omniopd.study.metrics import Interval

PAPER_TABLE3: dict[tuple[str, int], tuple[float, float, float, float]] = {
    # (phi, N): (MSE freq, MSE Bayes, corr freq, corr Bayes); Qwen3-32B oracle, 1000 chunks, C=50, M=20, alpha=1
    ("rouge1", 10): (0.0279, 0.0217, 0.5530, 0.6042), ("rouge1", 20): (0.0274, 0.0241, 0.5569, 0.5838),
    ("rougeL", 10): (0.0667, 0.0521, 0.6396, 0.6875), ("rougeL", 20): (0.0663, 0.0584, 0.6466, 0.6726),
    ("jaccard", 10): (0.0827, 0.0650, 0.5865, 0.6464), ("jaccard", 20): (0.0826, 0.0730, 0.5885, 0.6210),
    ("bleu1", 10): (0.0279, 0.0217, 0.5539, 0.6048), ("bleu1", 20): (0.0273, 0.0240, 0.5571, 0.5842),
    ("bleu2", 10): (0.1206, 0.0952, 0.6402, 0.6835), ("bleu2", 20): (0.1202, 0.1066, 0.6476, 0.6707),
    ("edit", 10): (0.1857, 0.1478, 0.6625, 0.7215), ("edit", 20): (0.1851, 0.1647, 0.6713, 0.7033),
    ("exact", 10): (0.3009, 0.2417, 0.4625, 0.6994), ("exact", 20): (0.3006, 0.2688, 0.5051, 0.6468),
}

LABELS = {"rouge1": "ROUGE-1", "rougeL": "ROUGE-L", "jaccard": "Jaccard", "bleu1": "BLEU-1", "bleu2": "BLEU-2",
          "edit": "Edit distance", "exact": "Exact match", "embedding": "Embedding"}


def _ci(value: Interval, digits: int = 4) -> str:
    return f"{value.value:.{digits}f} [{value.low:.{digits}f}, {value.high:.{digits}f}]"


def _paper(phi: str, n: int, i: int) -> str:
    row = PAPER_TABLE3.get((phi, n))
    return "-" if row is None else f"{row[i]:.4f}"


def markdown(result, target: str = "normalised", paper: bool = True) -> str:
    """Table 3's columns for one oracle target, 95% bootstrap intervals, the paper's values beside."""
    s = result.settings
    head = (f"Estimator study: {result.chunks} chunks, alpha = {s.alpha:g}, cut = {s.cut}, oracle target = {target} "
            f"(mean oracle {result.mean_oracle[target]:.4f}, mean student prior {result.mean_prior:.4f}, "
            f"prior-alone Pearson {result.pearson_prior[target]:.3f}). [95% bootstrap interval over chunks]")
    cols = ["phi", "N", "MSE (Freq)", "MSE (Bayes)", "Corr (Freq)", "Corr (Bayes)", "Bayes - Freq MSE",
            "Bayes - Freq Corr", "k_sem = 0"]
    if paper:
        cols += ["paper MSE F/B", "paper Corr F/B"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in (r for r in result.rows if r.target == target):
        cells = [LABELS.get(r.phi, r.phi), str(r.n), _ci(r.freq.mse), _ci(r.bayes.mse), _ci(r.freq.pearson, 3),
                 _ci(r.bayes.pearson, 3), _ci(r.bayes_minus_freq_mse), _ci(r.bayes_minus_freq_pearson, 3),
                 f"{100 * r.zero_k:.0f}%"]
        if paper:
            cells += [f"{_paper(r.phi, r.n, 0)} / {_paper(r.phi, r.n, 1)}", f"{_paper(r.phi, r.n, 2)} / {_paper(r.phi, r.n, 3)}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_study(result, path: Path, target: str = "normalised") -> None:
    """MSE and Pearson per phi, frequentist vs Bayesian, one bar group per (phi, N), with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in result.rows if r.target == target]
    labels = [f"{LABELS.get(r.phi, r.phi)}\nN={r.n}" for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.9 * len(rows)), 7), sharex=True)
    for ax, metric, title in ((axes[0], "mse", "MSE vs oracle (lower is better)"),
                              (axes[1], "pearson", "Pearson r vs oracle (higher is better)")):
        for offset, name, colour in ((-0.2, "freq", "#999999"), (0.2, "bayes", "#1f77b4")):
            values = [getattr(getattr(r, name), metric) for r in rows]
            mid = np.array([v.value for v in values])
            err = np.array([[v.value - v.low for v in values], [v.high - v.value for v in values]])
            ax.bar(x + offset, mid, 0.4, yerr=np.nan_to_num(err), capsize=2, color=colour,
                   label="frequentist k_sem/N" if name == "freq" else f"Bayesian (alpha={result.settings.alpha:g})")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    axes[1].set_xticks(x, labels, fontsize=7)
    fig.suptitle(f"Estimator study: {result.chunks} chunks, oracle = teacher's length-normalised chunk probability")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
