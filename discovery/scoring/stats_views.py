"""How a row's multi-seed statistics (``seed_stats.SeedStats``) are shown outside the archive: in the run's
summary (``brief_stats``) and in the history a proposer is given (``with_interval``)."""

from __future__ import annotations

from typing import Any

from lossforge.discovery.stats.seed_stats import SeedStats


def brief_stats(stats: SeedStats | None) -> dict[str, Any] | None:
    """``stats`` as the archive holds them without the per-seed metrics, as summaries show them."""
    if stats is None:
        return None
    return {key: value for key, value in stats.to_json(sort_keys=True).items() if key != "per_seed"}


def with_interval(row: Any) -> dict[str, Any]:
    """An archive row as a mapping for the proposer's history, its metrics carrying the multi-seed evidence:
    ``score_ci_low``/``score_ci_high`` (95% interval of the mean) and ``vs_<baseline>`` (paired mean difference)
    with its interval, so a proposer can tell what is noise; ``rung<r>_score`` for the low-fidelity rungs of
    successive halving. Rows of single-seed runs without halving are shown as before."""
    data = {
        name: getattr(row, name)
        for name in ("id", "name", "status", "code", "score", "profile", "reason", "thought", "generation")
    }
    metrics = dict(row.metrics or {})
    stats: SeedStats | None = row.stats
    if stats is None:
        data["metrics"] = metrics
        return data
    if stats.ci:
        metrics.update(score_mean=stats.mean, score_ci_low=stats.ci[0], score_ci_high=stats.ci[1])
    paired = stats.paired
    if paired is not None and paired.ci and paired.baseline_id != row.id:
        name = paired.baseline
        metrics.update(
            {f"vs_{name}": paired.mean, f"vs_{name}_ci_low": paired.ci[0], f"vs_{name}_ci_high": paired.ci[1]}
        )
    rungs = stats.rungs or ()
    for entry in rungs[:-1] if row.score is not None else rungs:
        metrics[f"rung{entry.rung}_score"] = entry.mean  # successive halving: the low-fidelity results
    data["metrics"] = metrics
    return data


__all__ = ["brief_stats", "with_interval"]
