"""Statistics of a comparison: mean and spread over seeds, paired tests and intervals against a reference model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_interval", "mean_std", "paired_comparison", "wilcoxon"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for one value) of the finite ``values``; NaNs if none."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return math.nan, math.nan
    return float(finite.mean()), float(finite.std(ddof=1)) if finite.size > 1 else 0.0


def wilcoxon(x: Sequence[float], y: Sequence[float]) -> dict[str, float | int | None]:
    """Two-sided Wilcoxon signed-rank test of the paired differences ``x - y`` (SciPy's, exact for small samples).

    Pairs with a non-finite value are dropped; zero differences are dropped too (Wilcoxon's rule).

    Returns:
        ``{"n": pairs used, "statistic": the smaller of the positive and negative rank sums, "p_value": ...}``;
        with no non-zero difference the p-value is 1.0, and with no pair both are None.
    """
    from scipy.stats import wilcoxon as scipy_wilcoxon

    if len(x) != len(y):
        raise ValueError(f"paired samples must have one length, got {len(x)} and {len(y)}.")
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    diffs = np.asarray([a - b for a, b in pairs], dtype=float)
    nonzero = diffs[diffs != 0]
    if len(pairs) == 0:
        return {"n": 0, "statistic": None, "p_value": None}
    if nonzero.size == 0:
        return {"n": len(pairs), "statistic": 0.0, "p_value": 1.0}
    result = scipy_wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided")
    return {"n": int(nonzero.size), "statistic": float(result.statistic), "p_value": float(result.pvalue)}


def bootstrap_interval(
    diffs: Sequence[float], level: float = 0.95, resamples: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences (resampling the pairs)."""
    values = np.asarray([d for d in diffs if math.isfinite(d)], dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def paired_comparison(
    model: dict[str, Sequence[float]], reference: dict[str, Sequence[float]]
) -> dict[str, float | int | None]:
    """``model`` against ``reference`` on the same test images and seeds.

    Args:
        model, reference: ``{seed: per-image scores}``, the images in one order for every seed and both models.

    Returns:
        ``mean_difference`` (model minus reference, over images of the per-image means over seeds) with its
        bootstrap ``interval_low``/``interval_high``; the Wilcoxon test over the images (``images_n``,
        ``images_p``) and over the seeds' means (``seeds_n``, ``seeds_p``; with 3 seeds the smallest two-sided
        p-value possible is 0.25).
    """
    seeds = sorted(set(model) & set(reference))
    if not seeds:
        return {"mean_difference": None, "interval_low": None, "interval_high": None, "images_n": 0,
                "images_p": None, "seeds_n": 0, "seeds_p": None}  # fmt: skip
    lengths = {len(model[s]) for s in seeds} | {len(reference[s]) for s in seeds}
    if len(lengths) != 1:
        raise ValueError(f"the per-image scores differ in length between seeds or models: {sorted(lengths)}.")
    a = np.nanmean(np.asarray([model[s] for s in seeds], dtype=float), axis=0)
    b = np.nanmean(np.asarray([reference[s] for s in seeds], dtype=float), axis=0)
    diffs = a - b
    low, high = bootstrap_interval(diffs)
    by_image = wilcoxon(a.tolist(), b.tolist())
    by_seed = wilcoxon([float(np.nanmean(model[s])) for s in seeds], [float(np.nanmean(reference[s])) for s in seeds])
    finite = diffs[np.isfinite(diffs)]
    return {
        "mean_difference": float(finite.mean()) if finite.size else None,
        "interval_low": low,
        "interval_high": high,
        "images_n": by_image["n"],
        "images_p": by_image["p_value"],
        "seeds_n": by_seed["n"],
        "seeds_p": by_seed["p_value"],
    }
