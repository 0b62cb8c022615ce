"""What a proposer returns and what it is shown: the contract between the loop and its proposers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lossforge.evaluate.llm.records import LLMCall


@dataclass(frozen=True)
class HistoryEntry:
    """One archived candidate as shown to a proposer (bounded: best-k plus most-recent-m)."""

    id: int
    name: str
    status: str
    code: str
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    profile_notes: str = ""
    reason: str = ""
    thought: str = ""
    generation: int = 0
    niche: str = ""  # its behavioural niche when ``search.niches`` is on (``lossforge.discovery.search.niches``)


@dataclass(frozen=True)
class ProposalRequest:
    """Everything a proposer needs for one proposal; ``seed`` derives from (run seed, generation, index)."""

    generation: int
    index: int
    seed: int
    history: tuple[HistoryEntry, ...]
    task: str
    repair_of: Proposal | None = None
    repair_errors: tuple[str, ...] = ()
    repair_round: int = 0
    lessons: str = ""  # the running lessons of the archive (``lossforge.discovery.search.lessons``); "" when off


@dataclass(frozen=True)
class Proposal:
    """A proposed candidate. ``code`` is untrusted text; ``raw`` is the LLM reply it came from, if any;
    ``llm_calls`` are the records of the calls that produced it (the pipeline archives them with the row)."""

    code: str
    name: str = ""
    thought: str = ""
    parents: tuple[int, ...] = ()
    proposer: str = ""
    raw: str | None = None
    parse_error: str | None = None
    llm_calls: tuple[LLMCall, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class Proposer(Protocol):
    name: str

    def propose(self, request: ProposalRequest) -> Proposal:
        """Return one proposal; never raise for a bad LLM reply (set ``parse_error`` instead)."""
        ...
