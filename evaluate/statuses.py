"""The statuses of a candidate, in one place (DESIGN.md, "Conventions"): the archive's column and its SQL
check, the training result record, the review commands and the progress display all derive from these.

- ``pending``: proposed or admitted, not finished (a killed run leaves these; ``--resume`` redoes them);
- ``ok``: trained and scored;
- ``rejected``: refused before training (parse, static policy, sandbox);
- ``duplicate``: the same function as an archived candidate (behavioural fingerprint);
- ``diverged``: non-finite loss, gradient or score during training;
- ``failed``: the candidate raised in training, or its worker died;
- ``timeout``: the training passed its wall-clock limit and was killed.

Only ``ok`` rows with a finite score take part in rankings (``is_ranked``): every ranking, chart and lesson asks it.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

RunStatus = Literal["ok", "rejected", "diverged", "failed", "timeout"]
CandidateStatus = Literal["pending", "ok", "rejected", "duplicate", "diverged", "failed", "timeout"]

RUN_STATUSES: tuple[str, ...] = ("ok", "rejected", "diverged", "failed", "timeout")
CANDIDATE_STATUSES: tuple[str, ...] = ("pending", "ok", "rejected", "duplicate", "diverged", "failed", "timeout")
# Rows whose function has been spent on (trained, being trained, or failed in training): a new proposal with
# the same fingerprint is a duplicate of them. Rejected and duplicate rows never reached training.
SPENT_STATUSES: tuple[str, ...] = ("ok", "pending", "diverged", "failed", "timeout")
# Only ``ok`` rows carry a score worth ranking.
SCORED_STATUS = "ok"
# Outcomes of a candidate's own code, the same on a rerun: a stored one may stand in for a training (the seed
# cache, a resumed multi-seed candidate). ``failed`` and ``timeout`` may be the machine's doing (a killed
# worker, a busy core) and are trained again.
REUSABLE_STATUSES: tuple[str, ...] = ("ok", "diverged")


class Rankable(Protocol):
    """Anything with a status and a score: an archive row, a history entry."""

    @property
    def status(self) -> str: ...

    @property
    def score(self) -> float | None: ...


def is_ranked(item: Rankable) -> bool:
    """Whether ``item`` takes part in rankings: trained and scored (``SCORED_STATUS``), with a finite score."""
    return item.status == SCORED_STATUS and item.score is not None and math.isfinite(item.score)


__all__ = [
    "CANDIDATE_STATUSES",
    "REUSABLE_STATUSES",
    "RUN_STATUSES",
    "SCORED_STATUS",
    "SPENT_STATUSES",
    "CandidateStatus",
    "Rankable",
    "RunStatus",
    "is_ranked",
]
