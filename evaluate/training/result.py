"""Result record of training and scoring one candidate. Workers return these and never raise into the loop."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lossforge.evaluate.statuses import RunStatus


@dataclass
class RunResult:
    """Outcome of ``lossforge.evaluate.train_candidate``.

    ``timings`` holds seconds for ``reference``, ``training`` and ``evaluation`` (the task's scoring), and for
    ``scoring_process`` (the whole life of the process that scores, which never ran the candidate),
    ``scoring_setup`` (its share besides the scoring: fork, model and adapter loading) and ``total``.
    With several betas, ``score`` is the mean over betas, ``per_beta`` maps each beta (as a string) to
    ``{score, metrics}`` and ``min_score`` is the worst of them.
    """

    status: RunStatus
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    stderr_tail: str | None = None
    per_beta: dict[str, dict[str, Any]] | None = None
    min_score: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """The record ``to_dict`` wrote (keys it does not know are ignored: an older or newer writer's)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.per_beta is None:
            data.pop("per_beta")
            data.pop("min_score")
        return data
