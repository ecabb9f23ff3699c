"""Statistics every stage shares (a leaf module: it imports nothing from sdft).

Binomial intervals and the exact McNemar test come from ``scipy.stats``; the percentile bootstrap stays a few
lines of numpy because its seeded draws are what earlier reports recorded (``scipy.stats.bootstrap`` resamples
differently).
"""

from __future__ import annotations

from typing import Sequence

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for ``k`` successes in ``n`` trials (95% by default); ``(0.0, 1.0)`` if n = 0.

    >>> lo, hi = wilson_interval(50, 100)
    >>> round(lo, 4), round(hi, 4)
    (0.4038, 0.5962)
    >>> wilson_interval(0, 10)[0], round(wilson_interval(10, 10)[1], 6)
    (0.0, 1.0)
    """
    import math

    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (only A right) and c (only B right): the
    binomial test of b successes in b + c trials at p = 1/2 (``scipy.stats.binomtest``).

    >>> round(mcnemar_exact(0, 6), 4)
    0.0312
    >>> mcnemar_exact(3, 3)
    1.0
    """
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return min(1.0, float(binomtest(min(b, c), b + c, 0.5).pvalue))


def bootstrap_interval(scores: Sequence[float], iters: int = 2000, seed: int = 0) -> list[float]:
    """Percentile bootstrap 95% interval of the mean (seeded); ``[0, 1]`` for no scores.

    >>> bootstrap_interval([1.0, 1.0, 1.0])
    [1.0, 1.0]
    """
    import numpy as np

    s = np.asarray(scores, float)
    if len(s) == 0:
        return [0.0, 1.0]
    means = s[np.random.default_rng(seed).integers(0, len(s), (iters, len(s)))].mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def wilcoxon_signed_rank(diffs: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (``scipy.stats.wilcoxon``); None when every
    difference is zero or there are none.

    >>> round(wilcoxon_signed_rank([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), 4)
    0.0312
    """
    d = [float(x) for x in diffs if x != 0]
    if not d:
        return None
    from scipy.stats import wilcoxon

    return float(wilcoxon(d).pvalue)


def paired_difference(a: Sequence[float], b: Sequence[float], iters: int = 2000, seed: int = 0) -> dict:
    """Paired ``b − a`` (one value per item, in the same order): the mean difference, its seeded percentile bootstrap
    95% interval, the two-sided Wilcoxon signed-rank p-value (None when every difference is zero) and n.

    >>> r = paired_difference([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2.0, 4.0, 6.0, 8.0, 10.0, 12.0])
    >>> r["mean"], r["n"], round(r["p"], 4)
    (3.5, 6, 0.0312)
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need the same length, got {len(a)} and {len(b)}")
    diffs = [float(y) - float(x) for x, y in zip(a, b)]
    if not diffs:
        return {"mean": None, "ci": None, "p": None, "n": 0}
    return {"mean": sum(diffs) / len(diffs), "ci": bootstrap_interval(diffs, iters, seed),
            "p": wilcoxon_signed_rank(diffs), "n": len(diffs)}


def pooled_paired_difference(per_seed: Sequence[tuple[dict, dict]], scale: float = 1.0) -> dict:
    """``b − a`` per item pooled over seeds: ``per_seed`` holds one ``(a, b)`` pair of ``item → value`` maps per
    seed; each item's difference (times ``scale``) is averaged over the seeds, over the items every seed has, and
    tested as :func:`paired_difference` (bootstrap interval, Wilcoxon p). Also returns ``diffs`` (the pooled
    per-item differences, in item order) and ``per_seed`` (each seed's mean difference over its common items).

    >>> r = pooled_paired_difference([({0: 1.0, 1: 1.0}, {0: 2.0, 1: 3.0}), ({0: 1.0, 1: 1.0}, {0: 1.0, 1: 2.0})])
    >>> r["diffs"], r["per_seed"], r["n"]
    ([0.5, 1.5], [1.5, 0.5], 2)
    """
    import statistics

    by_item: dict = {}
    means = []
    for a, b in per_seed:
        common = sorted(set(a) & set(b))
        d = [scale * (b[i] - a[i]) for i in common]
        means.append(statistics.mean(d) if d else None)
        for i, x in zip(common, d):
            by_item.setdefault(i, []).append(x)
    idx = sorted(i for i in by_item if len(by_item[i]) == len(per_seed))
    diffs = [statistics.mean(by_item[i]) for i in idx]
    return {**paired_difference([0.0] * len(diffs), diffs), "diffs": diffs, "per_seed": means}
