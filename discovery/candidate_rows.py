"""A candidate row as the pipeline handles it: read back after each write (``current_row``: rows are never
deleted, so a missing one is an archive error) and its outcome reported to the progress sink
(``report_finished``)."""

from __future__ import annotations

from lossforge.discovery.progress import Progress
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


__all__ = ["current_row", "report_finished"]
