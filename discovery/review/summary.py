"""How one candidate is summarised for review: its profile tags and its score (one score, or the mean and 95%
interval of its multi-seed ``stats`` with the paired verdict against the baseline).

The leaderboard, ``show``, the report and ``runs`` all summarise through here, so they agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lossforge.discovery.review.task_info import TASKS_JOINED_BY
from lossforge.discovery.stats.seed_stats import SeedStats
from lossforge.discovery.storage.archive import CandidateRow

# Profile flag -> (the value that earns the tag, the tag). Tags name what a reader should notice: a loss of rho
# alone (DPO-like), one that couples a batch (matters for gradient accumulation), one that overflows at large
# |beta * rho| (the published LRML), one that is not convex in rho.
TAG_RULES: tuple[tuple[str, bool, str], ...] = (
    ("rho_only", True, "rho-only"),
    ("batch_coupled", True, "batch-coupled"),
    ("stable_extremes", False, "unstable-extremes"),
    ("convex", False, "non-convex"),
)


def profile_tags(profile: dict[str, Any] | None) -> list[str]:
    """The tags of an archived profile (``[]`` for a candidate never profiled)."""
    if not profile:
        return []
    return [tag for key, value, tag in TAG_RULES if key in profile and bool(profile[key]) is value]


def number(value: Any, digits: int = 4) -> str:
    """A metric or score for a table: ``digits`` significant digits, ``-`` when missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def score_of(row: CandidateRow) -> float | None:
    """The score a candidate is judged by: the multi-seed mean where it has one, else its one score."""
    stats = row.stats
    return float(stats.mean) if stats is not None and multi_seed(stats) else row.score  # type: ignore[arg-type]


def multi_seed(stats: SeedStats | None) -> bool:
    """Whether ``stats`` summarise two or more seeds (one seed's stats say nothing its score does not)."""
    return stats is not None and stats.n >= 2 and stats.mean is not None


def verdict_of(stats: SeedStats | None) -> str | None:
    """The paired verdict against the baseline (``better``/``worse``/``inconclusive``) of multi-seed stats."""
    paired = stats.paired if stats is not None and multi_seed(stats) else None
    return None if paired is None else paired.verdict


def score_text(score: float | None, stats: SeedStats | None) -> str:
    """``0.512`` for one score; ``0.512±0.031`` (half the 95% interval) for a multi-seed mean."""
    if stats is None or not multi_seed(stats):
        return number(score)
    text = number(stats.mean)
    ci = stats.ci
    if ci and all(isinstance(v, int | float) for v in ci):
        text += f"±{number((ci[1] - ci[0]) / 2, 2)}"
    return text


def interval_decimals(ci: Sequence[float] | None) -> int:
    """Decimals that show the half-width of ``ci`` to two significant digits: never fewer than the three of the
    confirmation's sentence (``statistics.signed``), so the report and the sentence print the same numbers, and
    never more than six."""
    if not ci or not all(isinstance(v, int | float) and math.isfinite(v) for v in ci) or ci[1] <= ci[0]:
        return 3
    return min(6, max(3, 1 - math.floor(math.log10((ci[1] - ci[0]) / 2))))


def interval_text(ci: Sequence[float] | None, decimals: int | None = None, signed: bool = True) -> str:
    """``[+0.012, +0.050]`` (``signed``, for differences) or ``-`` where no interval was computed; ``decimals``
    defaults to ``interval_decimals(ci)``."""
    if not ci:
        return "-"
    places = interval_decimals(ci) if decimals is None else decimals
    sign = "+" if signed else ""
    return f"[{ci[0]:{sign}.{places}f}, {ci[1]:{sign}.{places}f}]"


def value_text(value: Any, ci: Sequence[float] | None, signed: bool = False) -> str:
    """``value`` with the decimals of its interval ``ci`` (``interval_decimals``), ``+`` shown when ``signed``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return number(value)
    return f"{value:{'+' if signed else ''}.{interval_decimals(ci)}f}"


def estimate_text(mean: Any, ci: Sequence[float] | None, signed: bool = True) -> str:
    """A mean and its interval with the same number of decimals: ``+0.031 [+0.012, +0.050]`` (a paired difference,
    ``signed``) or ``0.412 [0.382, 0.443]``. Mixed precision (``0.01235 [+0.0102, +0.0349]``) misreads as a
    difference known to more digits than its interval supports."""
    text = value_text(mean, ci, signed)
    return f"{text} {interval_text(ci, signed=signed)}" if ci else text


def candidate_summary(row: CandidateRow, rank: int | None) -> dict[str, Any]:
    """The leaderboard entry of one row (``--json`` prints these, through ``json_payload``)."""
    return {
        "rank": rank,
        "id": row.id,
        "name": row.name,
        "generation": row.generation,
        "status": row.status,
        "score": row.score,
        "metrics": row.metrics,
        "fingerprint": row.fingerprint,
        "parents": list(row.parents),
        "proposer": row.proposer,
        "stage": row.stage,
        "reason": row.reason,
        "tags": profile_tags(row.profile),
        "stats": row.stats,
    }


def json_payload(payload: Any) -> Any:
    """A review payload (a leaderboard entry, a run's overview, a shown candidate) as ``--json`` prints it: the
    ``SeedStats`` in it as the archive stores them (``SeedStats.to_json(sort_keys=True)``)."""
    if isinstance(payload, SeedStats):
        return payload.to_json(sort_keys=True)
    if isinstance(payload, dict):
        return {key: json_payload(value) for key, value in payload.items()}
    if isinstance(payload, list):
        return [json_payload(item) for item in payload]
    return payload


def run_task(config: dict[str, Any] | None) -> str | None:
    """The task a run trained on, from its resolved config; a multi-task run's tasks joined by ``+``."""
    training = (config or {}).get("training") or {}
    tasks = training.get("tasks") or ()
    return TASKS_JOINED_BY.join(tasks) if len(tasks) >= 2 else training.get("task")


__all__ = [
    "TAG_RULES",
    "candidate_summary",
    "estimate_text",
    "interval_decimals",
    "interval_text",
    "json_payload",
    "multi_seed",
    "number",
    "profile_tags",
    "run_task",
    "score_of",
    "score_text",
    "value_text",
    "verdict_of",
]
