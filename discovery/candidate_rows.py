"""A candidate row as the pipeline handles it: read back after each write (``current_row``: rows are never
deleted, so a missing one is an archive error), its trained outcome stored (``store_outcome``) and reported to
the progress sink (``report_finished``)."""

from __future__ import annotations

from lossforge.discovery.progress import Progress
from lossforge.discovery.scoring.fidelity import merge_timings, with_rung
from lossforge.discovery.stats.seed_stats import Outcome
from lossforge.discovery.storage.archive import Archive, ArchiveError, CandidateRow


def current_row(archive: Archive, cid: int) -> CandidateRow:
    """Row ``cid`` as the archive holds it now."""
    row = archive.get(cid)
    if row is None:
        raise ArchiveError(f"candidate #{cid} is not in the archive, and rows are never deleted")
    return row


def report_finished(progress: Progress, row: CandidateRow) -> None:
    """The progress line of a row that has reached its final status."""
    progress.finished(
        row.generation, row.idx, row.status, name=row.name or "", score=row.score, reason=row.reason or ""
    )


def store_outcome(
    archive: Archive,
    progress: Progress,
    row: CandidateRow,
    outcome: Outcome,
    *,
    rung: int | None = None,
    steps: int | None = None,
) -> None:
    """Write a trained row's outcome and report it; at ``rung`` of successive halving (trained at ``steps``) its
    statistics carry the earlier rungs' and its timings add to theirs (``scoring.fidelity``). A failed rung ends
    the candidate: no statistics, a reason."""
    stats = outcome.stats
    if rung is not None and stats is not None:
        stats = with_rung(row.stats, stats, rung, steps, outcome.status)
    timings = merge_timings(row.timings, outcome.timings) if rung else {**row.timings, **outcome.timings}
    archive.update_candidate(
        row.id,
        status=outcome.status,
        stage="done",
        score=outcome.score,
        metrics=outcome.metrics,
        timings=timings,
        reason=outcome.reason,
        stats=stats,
    )
    report_finished(progress, current_row(archive, row.id))


__all__ = ["current_row", "report_finished", "store_outcome"]
