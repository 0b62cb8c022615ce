"""Result records of checking a candidate. The checker returns these and never raises into the loop."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Stage = Literal["parse", "static", "sandbox", "ok"]


@dataclass
class CheckReport:
    """Outcome of ``lossforge.evaluate.check``: which stage stopped the candidate and why.

    ``errors`` are sentences an LLM can act on ("returned shape (1,), expected (8,)"). ``isolation`` names
    each runtime protection of the sandbox and whether it was active (``"on"``) or why not.
    """

    passed: bool
    stage: Stage
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    fingerprint: str | None = None
    name: str | None = None
    thought: str | None = None
    code: str | None = None
    isolation: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
