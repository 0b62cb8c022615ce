"""Niches over behaviour (``search.niches``): a MAP-Elites-style grid whose axes are profile traits.

Each axis is one trait of ``lossforge.discovery.search.traits`` (margin-only, batch-coupled, convex, stable at
extreme margins, bounded, margin-targeting); a candidate's niche is the combination of its values, e.g.
``"margin-only / convex / unbounded"`` for axes ``[rho_only, convex, bounded]`` (Mouret & Clune 2015,
"Illuminating search spaces by mapping elites"). The grid keeps the best scored candidate of each niche, its
elite (``niche_grid``). With niches on, the best-k part of the history shown to the proposer is a mix
(``select_across_niches``): a share ``1 - explore`` of it is the global best (exploit), the rest the elites of
other niches, best elite first (explore); the ``evolve`` proposer draws its parents from that history, so its
parents come from several niches. A candidate whose profile cannot tell an axis has no niche; it can still be
among the global best.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from lossforge.discovery.search.ranking import Direction, best_first
from lossforge.discovery.search.traits import label, traits

T = TypeVar("T")


def niche_key(profile: Mapping[str, Any] | None, axes: Sequence[str]) -> str:
    """The niche of a profile on ``axes`` (trait labels joined by " / "); "" when an axis is undetermined."""
    found = traits(profile)
    if not axes or any(axis not in found for axis in axes):
        return ""
    return " / ".join(label(axis, found[axis]) for axis in axes)


@dataclass(frozen=True)
class Cell:
    """One filled niche: its elite (best scored candidate), how many candidates landed there, and how many scored."""

    niche: str
    elite_id: int | None
    elite_name: str
    elite_score: float | None
    candidates: int
    scored: int


def niche_grid(rows: Sequence[Any], axes: Sequence[str], direction: Direction = "higher") -> list[Cell]:
    """The filled niches of archive rows (objects with id, name, status, score, profile), best elite first."""
    members: dict[str, list[Any]] = {}
    for row in rows:
        if row.status in ("rejected", "duplicate") or not (key := niche_key(row.profile, axes)):
            continue
        members.setdefault(key, []).append(row)
    cells = []
    for key, group in members.items():
        ranked = best_first(group, direction)
        elite = ranked[0] if ranked else None
        cells.append(
            Cell(
                niche=key,
                elite_id=elite.id if elite else None,
                elite_name=(elite.name or "") if elite else "",
                elite_score=elite.score if elite else None,
                candidates=len(group),
                scored=len(ranked),
            )
        )
    sign = -1.0 if direction == "higher" else 1.0
    return sorted(cells, key=lambda c: (c.elite_score is None, sign * (c.elite_score or 0.0), c.niche))


def select_across_niches(pool: Sequence[T], best_k: int, explore: float, direction: Direction = "higher") -> list[T]:
    """Best-k entries (each with ``niche``, ``id``, ``score``, ``status``): the global best ``round((1 - explore)
    * best_k)``, then the best elite of each niche not yet shown, best elite first, then the global best again
    to fill; returned best first (ties: lower id), so the prompt reads as today's."""
    ranked = best_first(list(pool), direction)
    exploit = ranked[: max(0, best_k - round(best_k * explore))]
    chosen = {id(entry) for entry in exploit}
    shown = {getattr(entry, "niche", "") for entry in exploit}
    picked = list(exploit)
    for entry in ranked:
        if len(picked) >= best_k:
            break
        niche = getattr(entry, "niche", "")
        if niche and niche not in shown and id(entry) not in chosen:
            picked.append(entry)
            chosen.add(id(entry))
            shown.add(niche)
    picked += [entry for entry in ranked if id(entry) not in chosen][: max(0, best_k - len(picked))]
    return best_first(picked, direction)


__all__ = ["Cell", "niche_grid", "niche_key", "select_across_niches"]
