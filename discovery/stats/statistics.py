"""Statistics of multi-seed scores: mean, standard error, Student-t confidence intervals, verdicts on differences,
and Spearman's rank correlation (how well one ordering of losses predicts another).

Every candidate of a run is trained on the same seeds (common random numbers), so its per-seed scores can be
compared with the baseline's seed by seed: the paired differences d_i = x_i - b_i cancel what the seed does
to both (data order, LoRA initialisation, sampling), and their interval is far narrower than the difference
of two independent means. The 95% interval is mean +- t_{0.975, n-1} * s / sqrt(n) (Student 1908; exact for
normal errors at every n, and what "Student t for n < 10" asks; it approaches the normal 1.96 as n grows).
The stored statistics of a candidate and its paired comparison are ``seed_stats``' ``SeedStats`` and
``PairedStats``, built from these.

Standard library only: the t quantile inverts the regularized incomplete beta function (continued fraction,
Numerical Recipes 3rd ed., section 6.4) by bisection, so no SciPy is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Verdict = Literal["better", "worse", "inconclusive"]
LEVEL = 0.95


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), NR eq. 6.4.5."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (t_quantile(0.975, 4) = 2.7764)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p!r}, df={df!r}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean, s / sqrt(n) with the n - 1 sample variance; None for one value."""
    n = len(values)
    if n < 2:
        return None
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1) / n)


def confidence_interval(values: Sequence[float], level: float = LEVEL) -> list[float] | None:
    """[lo, hi] = mean -+ t_{(1+level)/2, n-1} * stderr; None for fewer than two values."""
    se = stderr(values)
    if se is None:
        return None
    half = t_quantile(0.5 + level / 2.0, len(values) - 1) * se
    m = mean(values)
    return [m - half, m + half]


def verdict(ci: Sequence[float] | None) -> Verdict:
    """``better`` when the interval of the difference lies above 0, ``worse`` below, else ``inconclusive``."""
    if ci is None:
        return "inconclusive"
    if ci[0] > 0:
        return "better"
    if ci[1] < 0:
        return "worse"
    return "inconclusive"


def signed(value: float) -> str:
    """``+0.031`` / ``-0.004``: a difference as the run summary writes it."""
    return f"{value:+.3f}"


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # average ranks for ties
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of the ranks (Spearman 1904), ties averaged."""
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5


__all__ = [
    "LEVEL",
    "Verdict",
    "confidence_interval",
    "mean",
    "signed",
    "spearman",
    "stderr",
    "t_cdf",
    "t_quantile",
    "verdict",
]
