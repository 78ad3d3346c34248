"""Agreement of an estimate with the oracle over K chunks: MSE and Pearson correlation (the
columns of Table 3), each with a paired bootstrap interval over chunks.

Pure numpy. The bootstrap resamples chunks with replacement (the same resample for every
estimator, so the difference Bayesian - frequentist gets its own interval) and reports the
2.5 and 97.5 percentiles. A resample whose estimate is constant has no correlation; it is
left out of the Pearson percentiles (counted in `degenerate`), never filled with a number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def mse(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean squared error over chunks."""
    return float(np.mean((np.asarray(estimate) - np.asarray(truth)) ** 2))


def pearson(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation over chunks; NaN when either side is constant."""
    x, y = np.asarray(estimate, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def _rows_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson of every row pair of x, y: [B, K] -> [B] (NaN where a row is constant)."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (x * y).sum(axis=1) / denominator, np.nan)


def _interval(value: float, samples: np.ndarray) -> Interval:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return Interval(value, float("nan"), float("nan"))
    low, high = np.percentile(finite, [2.5, 97.5])
    return Interval(value, float(low), float(high))


@dataclass(frozen=True)
class Agreement:
    """MSE and Pearson of one estimator against the oracle, with intervals."""

    mse: Interval
    pearson: Interval
    degenerate: int  # bootstrap resamples without a defined correlation


def bootstrap_indices(k: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, k] chunk indices drawn with replacement (one draw shared by every estimator)."""
    if k < 2:
        raise ValueError(f"need at least 2 chunks for MSE and correlation intervals, got {k}")
    return np.random.default_rng(seed).integers(0, k, size=(resamples, k))


def agreement(estimate: np.ndarray, truth: np.ndarray, indices: np.ndarray) -> Agreement:
    """MSE and Pearson of `estimate` vs `truth` ([K] each), intervals from the resamples `indices`."""
    estimate, truth = np.asarray(estimate, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate {estimate.shape} and truth {truth.shape} must have one value per chunk")
    e, t = estimate[indices], truth[indices]  # [B, K]
    boot_mse = ((e - t) ** 2).mean(axis=1)
    boot_r = _rows_pearson(e, t)
    return Agreement(
        mse=_interval(mse(estimate, truth), boot_mse),
        pearson=_interval(pearson(estimate, truth), boot_r),
        degenerate=int((~np.isfinite(boot_r)).sum()),
    )


def difference(a: np.ndarray, b: np.ndarray, truth: np.ndarray, indices: np.ndarray) -> tuple[Interval, Interval]:
    """(MSE(a) - MSE(b), r(a) - r(b)) with paired bootstrap intervals: is a better than b beyond noise?"""
    a, b, truth = (np.asarray(v, dtype=np.float64) for v in (a, b, truth))
    ea, eb, t = a[indices], b[indices], truth[indices]
    d_mse = ((ea - t) ** 2).mean(axis=1) - ((eb - t) ** 2).mean(axis=1)
    d_r = _rows_pearson(ea, t) - _rows_pearson(eb, t)
    return (_interval(mse(a, truth) - mse(b, truth), d_mse), _interval(pearson(a, truth) - pearson(b, truth), d_r))
