"""Several trainings of one candidate as one result: what aggregating over betas (``launcher.train_candidate``
with ``betas``) and over seeds (``lossforge.discovery.stats.seed_stats.aggregate``) have in common.

- only numbers are aggregated (``numeric``): a metric or timing that is not a number is left out;
- timings add up per phase (``summed_timings``): the candidate's cost is every training's;
- metrics are averaged over the trainings, on the names every training reports (``mean_metrics``), in name
  order; the mean is exactly rounded (``math.fsum``), so it does not depend on the order of the trainings.

Which training decides a failed aggregate, and what the score is (the mean over betas, or the seeds' statistics),
stays with each caller.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lossforge.evaluate.training.result import RunResult


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``values`` that are numbers."""
    return {key: value for key, value in values.items() if isinstance(value, int | float)}


def summed_timings(results: Iterable[RunResult], into: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``into`` (default: nothing) with each result's numeric timings added, phase by phase."""
    timings = dict(into or {})
    for result in results:
        for key, seconds in numeric(result.timings).items():
            timings[key] = timings.get(key, 0.0) + seconds
    return timings


def mean_metrics(results: Sequence[RunResult]) -> dict[str, float]:
    """The mean of each numeric metric that every one of ``results`` reports, by name."""
    shared = set.intersection(*(set(numeric(result.metrics)) for result in results))
    return {key: math.fsum(float(r.metrics[key]) for r in results) / len(results) for key in sorted(shared)}


__all__ = ["mean_metrics", "numeric", "summed_timings"]
