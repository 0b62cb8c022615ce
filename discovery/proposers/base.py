"""What a proposer returns and what it is shown: the contract between the loop and its proposers.

A proposer is a ``ProposerBase`` subclass with a ``name`` and ``propose``; the hooks the loop calls around the
proposals (``preflight``, ``prepare_generation``, ``write_lessons``, ``close``) do nothing unless it overrides
them, so the loop calls them on every proposer and never asks whether one has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lossforge.discovery.storage.archive import Archive
    from lossforge.discovery.storage.schema import CandidateRow
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


class ProposerBase:
    """The proposer contract: ``propose`` to implement, and four hooks with no-op defaults."""

    name: str = ""

    def propose(self, request: ProposalRequest) -> Proposal:
        """Return one proposal; never raise for a bad LLM reply (set ``parse_error`` instead)."""
        raise NotImplementedError(f"{type(self).__name__} must implement propose")

    def preflight(self) -> None:
        """Fail fast on a bad endpoint, key or model (an ``LLMError``), before anything is spent; default: nothing
        to check."""

    def prepare_generation(self, archive: Archive, generation: int) -> object:
        """Called before each generation >= 1 is proposed (an LLM ensemble plans its models); default: nothing."""
        return None

    def write_lessons(self, facts: str, rows: Sequence[CandidateRow], max_chars: int) -> tuple[str, LLMCall] | None:
        """The running lessons written by the proposer itself (``lossforge.discovery.search.lessons``) and the LLM
        call that wrote them; default None: the rule-based ``facts`` stand."""
        return None

    def close(self) -> None:
        """Release what the proposer holds (an LLM client) at the end of the run; default: nothing."""


__all__ = ["HistoryEntry", "Proposal", "ProposalRequest", "ProposerBase"]
