"""``RunSummary``: what a discovery run did, as ``run_discovery`` returns it and ``lossforge run --json`` prints it."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lossforge.discovery.config import RunConfig
from lossforge.discovery.scoring.seed_training import busy_seconds
from lossforge.discovery.scoring.stats_views import brief_stats
from lossforge.discovery.search.ranking import best_first
from lossforge.discovery.storage.archive import Archive

RunStatus = Literal["finished", "budget"]


@dataclass
class RunSummary:
    """What a run did. ``status``: ``finished`` (all generations) or ``budget`` (stopped by an LLM cap)."""

    run_dir: str
    status: RunStatus
    stop_reason: str | None
    generations: int  # completed after generation 0
    counts: dict[str, int]
    best: dict[str, Any] | None
    llm: dict[str, float]
    wall_s: float
    train_busy_s: float  # wall time during which at least one training ran (union of intervals)
    startup_s: float = 0.0  # one-off: everything before generation 0 (imports of torch/TRL, the fork server)
    resumed: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    # Held-out confirmation of the winners (``lossforge.discovery.scoring.confirm``): its sentence, winner and results.
    confirmation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["confirmed"] = (self.confirmation or {}).get("sentence")  # last: what the run's evidence says
        return data


def train_busy(archive: Archive) -> float:
    """Union of the training intervals recorded on rows (concurrent trainings count once)."""
    return busy_seconds(
        (float(r.timings["train_start"]), float(r.timings["train_end"]))
        for r in archive.candidates()
        if "train_start" in r.timings and "train_end" in r.timings
    )


def summarize(
    archive: Archive,
    config: RunConfig,
    *,
    run_dir: Path,
    status: RunStatus,
    reason: str | None,
    generations: int,
    wall_s: float,
    resumed: bool,
) -> RunSummary:
    """The summary of the run in ``archive``: counts by status, the best candidate (the one ranking), LLM use."""
    rows = archive.candidates()
    counts = Counter(r.status for r in rows)
    best = None
    for b in best_first(rows)[:1]:
        path = archive.code_path(b.id)
        best = {
            "id": b.id,
            "name": b.name,
            "score": b.score,
            "generation": b.generation,
            "metrics": b.metrics,
            "path": str(path) if path else None,
            "stats": brief_stats(b.stats),
        }
    calls, tokens, cost = archive.llm_totals()
    return RunSummary(
        run_dir=str(run_dir),
        status=status,
        stop_reason=reason,
        generations=generations,
        counts=dict(counts),
        best=best,
        llm={"calls": calls, "tokens": tokens, "cost_usd": cost},
        wall_s=wall_s,
        train_busy_s=train_busy(archive),
        resumed=resumed,
        config=config.resolved(),
    )


__all__ = ["RunStatus", "RunSummary", "summarize", "train_busy"]
