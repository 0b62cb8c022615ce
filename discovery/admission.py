"""Admission of a checked candidate to training, one archive write per verdict:

- ``rejected``: the check failed (static policy, sandbox, runtime checks), its errors the row's reason;
- ``duplicate``: its behavioural fingerprint is one the archive already spent training on, or, with
  ``search.near_duplicates``, its gradient direction lies within that distance of one (``search.novelty``);
- admitted: the row goes to the ``training`` stage with its fingerprint stored first, so a later twin is caught
  even while this one trains.
"""

from __future__ import annotations

from typing import Any

from lossforge.discovery.search.novelty import near_duplicate
from lossforge.discovery.storage.archive import Archive, CandidateRow
from lossforge.evaluate.checking.check_report import CheckReport


def admit(archive: Archive, row: CandidateRow, report: CheckReport, near_duplicates: float | None) -> bool:
    """Record the check's verdict on ``row``; True when the candidate goes on to training."""
    timings: dict[str, Any] = {"check_s": round(report.seconds, 4)}
    name = row.name or report.name or None
    if not report.passed:
        reason = "\n".join(report.errors) or f"rejected at the {report.stage} stage"
        archive.update_candidate(
            row.id,
            status="rejected",
            stage=report.stage,
            reason=reason,
            profile=report.profile,
            timings=timings,
            name=name,
        )
        return False
    fingerprint = report.fingerprint
    twin = archive.find_by_fingerprint(fingerprint, exclude_id=row.id) if fingerprint else None
    reason = f"same function as #{twin.id} ({twin.name or 'unnamed'}), by behavioural fingerprint" if twin else None
    if reason is None and near_duplicates is not None:
        near = near_duplicate(archive, report.profile, near_duplicates, row.id)
        reason = near.reason() if near is not None else None
    if reason is not None:
        archive.update_candidate(
            row.id,
            status="duplicate",
            stage="dedup",
            reason=reason,
            fingerprint=fingerprint,
            profile=report.profile,
            timings=timings,
            name=name,
        )
        return False
    archive.update_candidate(
        row.id, stage="training", fingerprint=fingerprint, profile=report.profile, timings=timings, name=name
    )
    return True


__all__ = ["admit"]
