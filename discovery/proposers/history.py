"""The bounded history a proposer is shown: archived candidates as ``HistoryEntry``s, split into the best-k scored
and the most-recent-m others (failures included, so a proposer learns what breaks), whatever the generation.

The loop builds each generation's history with it; the LLM's prompts (``prompting``) select from it again
under their own bounds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from lossforge.discovery.proposers.base import HistoryEntry
from lossforge.discovery.search.niches import niche_key, select_across_niches
from lossforge.discovery.search.ranking import Direction, best_first


def clip(text: Any, limit: int) -> str:
    """``text`` cut to ``limit`` characters, its head kept (a loss's signature and first lines say more than its
    tail)."""
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 20)].rstrip() + "\n# ... (truncated)"


def select_history(
    entries: Iterable[HistoryEntry],
    best_k: int,
    recent_m: int,
    *,
    direction: Direction = "higher",
    explore: float | None = None,
) -> tuple[tuple[HistoryEntry, ...], tuple[HistoryEntry, ...]]:
    """Split archived candidates into (best-k scored, most-recent-m others), disjoint and bounded.

    Best: status ``ok`` with a finite score, ordered best first (ties: older id first, so it is stable); with
    ``explore`` (niches on) a mix of the global best and other niches' elites (``niches.select_across_niches``).
    Recent: the newest ``recent_m`` of the rest by id, newest first; failures and duplicates included.
    """
    pool = list(entries)
    if explore is not None and any(entry.niche for entry in pool):
        best = select_across_niches(pool, max(0, best_k), explore, direction)
    else:
        best = best_first(pool, direction)[: max(0, best_k)]
    chosen = {e.id for e in best}
    rest = sorted((e for e in pool if e.id not in chosen), key=lambda e: -e.id)
    return tuple(best), tuple(rest[: max(0, recent_m)])


def profile_notes(profile: dict[str, Any] | None) -> str:
    """One line of what the checker's profile says that matters for a proposal (stability, coupling...)."""
    if not profile:
        return ""
    notes: list[str] = []
    for key in ("notes", "summary"):
        value = profile.get(key)
        if isinstance(value, str) and value:
            notes.append(value)
        elif isinstance(value, list | tuple):
            notes.extend(str(v) for v in value if v)
    flags = {
        "rho_only": ("depends on the margin only", "depends on more than the margin"),
        "batch_coupled": ("couples examples in a batch", None),
        "stable_extremes": (None, "unstable at extreme margins"),
        "convex": ("convex in the margin", "not convex in the margin"),
    }
    for key, (if_true, if_false) in flags.items():
        value = profile.get(key)
        if value is True and if_true:
            notes.append(if_true)
        elif value is False and if_false:
            notes.append(if_false)
    return clip("; ".join(dict.fromkeys(notes)), 300)


def history_from_rows(rows: Sequence[Any], niche_axes: Sequence[str] = ()) -> tuple[HistoryEntry, ...]:
    """Adapt archive rows (mappings or objects with the same attribute names) to ``HistoryEntry``; with
    ``niche_axes`` (``search.niches``) each entry carries its niche."""

    def get(row: Any, key: str, default: Any = None) -> Any:
        if isinstance(row, dict):
            return row.get(key, default)
        return getattr(row, key, default)

    entries = []
    for row in rows:
        metrics = get(row, "metrics") or {}
        entries.append(
            HistoryEntry(
                id=int(get(row, "id")),
                name=str(get(row, "name") or ""),
                status=str(get(row, "status") or ""),
                code=str(get(row, "code") or ""),
                score=get(row, "score"),
                metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
                profile_notes=profile_notes(get(row, "profile")),
                reason=str(get(row, "reason") or ""),
                thought=str(get(row, "thought") or ""),
                generation=int(get(row, "generation") or 0),
                niche=niche_key(get(row, "profile"), niche_axes) if niche_axes else "",
            )
        )
    return tuple(entries)


__all__ = ["clip", "history_from_rows", "profile_notes", "select_history"]
