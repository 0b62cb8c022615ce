"""The one ranking of candidates: trained (status ``ok``) rows with a finite score, best first, ties broken by
the lower id (the older candidate), so that every ranking of the same archive is the same.

Used by the run summary, the history shown to a proposer, ``evolve``'s parent pool and the
leaderboard. Works on anything with ``id``, ``status`` and ``score`` attributes (archive rows, history entries).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Protocol, TypeVar

from lossforge.evaluate.statuses import is_ranked

Direction = Literal["higher", "lower"]


class Scored(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def status(self) -> str: ...

    @property
    def score(self) -> float | None: ...


T = TypeVar("T", bound=Scored)


def best_first(items: Iterable[T], direction: Direction = "higher") -> list[T]:
    """The ranked items, best first (``direction``: which way the score is better); ties: lower id first."""
    sign = -1.0 if direction == "higher" else 1.0
    return sorted(
        (item for item in items if is_ranked(item)), key=lambda item: (sign * float(item.score or 0.0), item.id)
    )


__all__ = ["Direction", "best_first"]
