"""Small, dependency-free statistics for comparing two models or two methods (numpy + math only).

Used by the ablation bench (distillation methods compared across seeds) and the search-winner bench (two models
scored on the same eval items). Everything here is paired: both sides are measured on the same items or at the same
seeds, so the comparison is on per-item / per-seed differences, which cancels the shared item and seed difficulty
and gives much tighter intervals than comparing two independent accuracies.

Conventions: differences are always ``b - a``; accuracies and their differences are in percentage points; intervals
are two-sided at level ``1 - alpha``; every random draw comes from ``numpy.random.default_rng(seed)`` so a result
is reproducible from its seed.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

# Elements of the (chunk, n_clusters) index matrix drawn at once: bounds memory (~32 MB of int64) independent of
# n_boot while keeping each chunk large enough that the numpy calls dominate, not the Python loop.
_CHUNK_ELEMS = 4_000_000


def mean_sd(values: ArrayLike) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1), the usual "mean ± sd over seeds" summary.

    ddof=1 because the seeds are a sample of all possible seeds; with one value the spread is unknown and is
    reported as 0.0 rather than NaN so tables still render.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean_sd needs at least one value")
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return mean, sd


def _correct_vector(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x).ravel()
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must hold 0/1 (or bool) per-item correctness")
    return arr.astype(np.int64)


def _paired_correct(correct_a: ArrayLike, correct_b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a = _correct_vector(correct_a, "correct_a")
    b = _correct_vector(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must score the same items: {a.size} vs {b.size}")
    if a.size == 0:
        raise ValueError("no items")
    return a, b


def paired_bootstrap_ci(
    correct_a: ArrayLike,
    correct_b: ArrayLike,
    clusters: ArrayLike,
    n_boot: int = 10000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Cluster-bootstrap percentile interval for the accuracy difference ``b - a`` (points) on the same items.

    Why clustered: images of one class share the class name, prompts and visual domain, so their errors are
    correlated; resampling single images would treat them as independent and give too narrow an interval. Whole
    clusters (classes) are drawn with replacement instead, and each resample's difference is
    ``100 * sum over drawn clusters of (b_right - a_right) / sum of their item counts``. Pass
    ``clusters = np.arange(n_items)`` for the ordinary item-level paired bootstrap.

    Only per-cluster sums enter a resample, so they are precomputed and the (n_boot, n_clusters) index matrix is
    drawn in chunks: 1,148 clusters x 10,000 resamples takes well under a second.
    """
    a, b = _paired_correct(correct_a, correct_b)
    cl = np.asarray(clusters).ravel()
    if cl.shape != a.shape:
        raise ValueError(f"clusters must give one id per item: {cl.size} ids for {a.size} items")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")

    _, inv = np.unique(cl, return_inverse=True)
    inv = inv.ravel()
    k = int(inv.max()) + 1
    d_sum = np.bincount(inv, weights=(b - a), minlength=k).astype(np.int64)  # discordance per cluster
    n_sum = np.bincount(inv, minlength=k).astype(np.int64)  # items per cluster (>= 1 each)

    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, _CHUNK_ELEMS // k)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        idx = rng.integers(0, k, size=(m, k))
        diffs[start:start + m] = 100.0 * d_sum[idx].sum(axis=1) / n_sum[idx].sum(axis=1)

    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return {
        "diff": 100.0 * float(d_sum.sum()) / float(a.size),
        "lo": float(lo),
        "hi": float(hi),
        "n_items": int(a.size),
        "n_clusters": k,
        "n_boot": int(n_boot),
    }


def _t_two_sided_coverage(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer ``df``, exactly (Abramowitz & Stegun 26.7.3/26.7.4).

    A finite trigonometric series for integer df, so no incomplete-beta approximation or scipy is needed.
    """
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:  # sin(theta) * [1 + 1/2 c^2 + (1*3)/(2*4) c^4 + ... up to c^(df-2)]
        term, total = 1.0, 1.0
        for j in range(1, df // 2):
            term *= c2 * (2 * j - 1) / (2 * j)
            total += term
        return s * total
    if df == 1:
        return 2.0 * theta / math.pi
    # odd df >= 3: (2/pi) * [theta + sin cos (1 + 2/3 c^2 + (2*4)/(3*5) c^4 + ... up to c^(df-3))]
    term, total = 1.0, 1.0
    for j in range(1, (df - 1) // 2):
        term *= c2 * (2 * j) / (2 * j + 1)
        total += term
    return 2.0 / math.pi * (theta + s * math.sqrt(c2) * total)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with integer ``df``, e.g. t_quantile(0.975, 2) = 4.3027.

    Bisection on the exact CDF above, to float precision; avoids a hard-coded table that only covers one alpha.
    """
    if not 0.5 < p < 1.0:
        raise ValueError("p must be in (0.5, 1)")
    if df < 1:
        raise ValueError("df must be >= 1")
    target = 2.0 * p - 1.0  # P(|T| < t)
    lo, hi = 0.0, 1.0
    while _t_two_sided_coverage(hi, df) < target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _t_two_sided_coverage(mid, df) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def paired_seed_ci(
    diffs: Sequence[float] | ArrayLike,
    n_boot: int = 10000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Interval for the mean of per-seed paired differences (e.g. method B minus method A at seeds 0, 1, 2).

    Returns both a percentile bootstrap of the mean and a Student-t interval, and ``quote`` names the one to report:
    ``"t"`` for <= 5 seeds, ``"bootstrap"`` above. Why: with a handful of seeds the bootstrap can only reshuffle
    the few observed values (n^n resamples, at most n distinct extremes), its spread is biased low by sqrt((n-1)/n)
    and it ignores that the sd itself is estimated, so it is too narrow; the t-interval accounts for both (assuming
    roughly normal seed noise, the usual assumption for seed variance). With one seed no interval exists (NaN).
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    n = int(d.size)
    if n == 0:
        raise ValueError("paired_seed_ci needs at least one difference")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    mean, sd = mean_sd(d)

    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    b_lo, b_hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])

    if n >= 2:
        t = t_quantile(1 - alpha / 2, n - 1)
        half = t * sd / math.sqrt(n)
        t_lo, t_hi = mean - half, mean + half
    else:
        t, t_lo, t_hi = math.nan, math.nan, math.nan

    return {
        "mean": mean,
        "sd": sd,
        "n": n,
        "boot_lo": float(b_lo),
        "boot_hi": float(b_hi),
        "t": t,
        "t_lo": t_lo,
        "t_hi": t_hi,
        "n_boot": int(n_boot),
        "quote": "t" if n <= 5 else "bootstrap",
    }


def _binom_half_cdf(k: int, n: int) -> tuple[int, int]:
    """BinomCDF(k; n, 0.5) as the exact fraction (numerator, 2**n) with Python integers."""
    return sum(math.comb(n, i) for i in range(k + 1)), 1 << n


def mcnemar(correct_a: ArrayLike, correct_b: ArrayLike) -> dict:
    """Exact two-sided McNemar test: do two models scored on the same items differ in accuracy?

    Only discordant items carry information: ``b`` = a right & b wrong, ``c`` = a wrong & b right. Under the null
    each discordant item is a fair coin, so p = min(1, 2 * BinomCDF(min(b, c); b + c, 0.5)). The exact binomial
    (integer arithmetic, one rounding at the end) rather than the chi-square approximation, because discordant
    counts between close models are often small; p = 1.0 when there are no discordant pairs.
    """
    a, bb = _paired_correct(correct_a, correct_b)
    b = int(np.sum((a == 1) & (bb == 0)))
    c = int(np.sum((a == 0) & (bb == 1)))
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "p": 1.0}
    num, den = _binom_half_cdf(min(b, c), n)
    p = 1.0 if 2 * num >= den else (2 * num) / den  # int / int is correctly rounded in Python
    return {"b": b, "c": c, "p": p}
