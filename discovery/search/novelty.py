"""Near-duplicate rejection against the archive (``search.near_duplicates``), before any training is spent.

The distance and the threshold's measurement are ``lossforge.evaluate.checking.near_duplicates``'s; this module
only says which archived rows a new candidate is compared with: the rows training was spent on (or is being
spent on), the same set the exact fingerprint dedup uses (``Archive.find_by_fingerprint``).
"""

from __future__ import annotations

from typing import Any

from lossforge.discovery.storage.archive import Archive
from lossforge.evaluate.checking.near_duplicates import NearMatch, nearest_within
from lossforge.evaluate.statuses import SPENT_STATUSES


def near_duplicate(
    archive: Archive, profile: dict[str, Any] | None, threshold: float, exclude_id: int
) -> NearMatch | None:
    """The closest spent-on archived candidate within ``threshold`` of ``profile``, or None."""
    if not profile:
        return None
    others = (
        (row.id, row.name or "", row.profile)
        for row in archive.candidates()
        if row.id != exclude_id and row.status in SPENT_STATUSES and row.profile
    )
    return nearest_within(profile, others, threshold)


__all__ = ["near_duplicate"]
