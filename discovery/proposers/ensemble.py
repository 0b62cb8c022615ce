"""An LLM ensemble (``proposer.models``): several OpenAI-compatible models, a bandit picks each proposal's.

Each model is an ``OpenAIProposer`` of its own (model, endpoint, key variable, prices), all sharing the run's
``Budget``. Before each generation the loop calls ``prepare_generation(archive, generation)``: the bandit's
state is computed from the archive rows of the earlier generations (``bandit.arm_state``), the choice of every
slot is made in index order (``Bandit.plan``), and both are archived as meta ``bandit/g<generation>`` before any
request is sent. A resumed run reads that meta back (and would recompute the same plan: it is a pure function
of the earlier, complete generations and the slot seeds), so it sends each slot to the same model. Repair
rounds of a slot go to the model of its first round, which continues its own conversation. Every proposal's
``origin`` is ``llm:<model>``, what the bandit's rewards and the per-model statistics read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from lossforge.discovery.proposers.bandit import Bandit, Plan, RewardKind, arm_state
from lossforge.discovery.proposers.base import Proposal, ProposalRequest, ProposerBase
from lossforge.discovery.proposers.openai import OpenAIProposer
from lossforge.discovery.search.ranking import Direction
from lossforge.discovery.seeds import derive_seed
from lossforge.discovery.storage.archive import Archive

META_PREFIX = "bandit/g"


class EnsembleProposer(ProposerBase):
    """Proposer protocol over named ``OpenAIProposer``s; thread-safe once a generation is prepared."""

    name = "openai"

    def __init__(
        self,
        members: dict[str, OpenAIProposer],
        bandit: Bandit,
        *,
        run_seed: int,
        population: int,
        baseline: str,
        reward: RewardKind,
        direction: Direction = "higher",
    ) -> None:
        self.members = members
        self.bandit = bandit
        self.run_seed = run_seed
        self.population = population
        self.baseline = baseline
        self.reward: RewardKind = reward
        self.direction: Direction = direction
        self._choices: dict[int, tuple[str, ...]] = {}

    def plan_for(self, archive: Archive, generation: int) -> Plan:
        """Generation ``generation``'s bandit state and choices, from the archive of the earlier generations."""
        rows = [row for row in archive.candidates() if row.generation < generation]
        baseline = next(
            (row.score for row in rows if row.generation == 0 and row.name == self.baseline and row.status == "ok"),
            None,
        )
        costs = {}
        for row in rows:
            call = archive.llm_call(row.prompt_id) if row.prompt_id is not None else None
            costs[row.id] = float((call or {}).get("cost_usd") or 0.0)
        state = arm_state(
            rows, self.bandit.arms, baseline=baseline, costs=costs, kind=self.reward, direction=self.direction
        )
        seeds = [derive_seed(self.run_seed, generation, index) for index in range(self.population)]
        return self.bandit.plan(generation, state, seeds)

    def prepare_generation(self, archive: Archive, generation: int) -> Plan:
        """Archive (or read back) the plan of ``generation`` and route its slots by it."""
        key = f"{META_PREFIX}{generation}"
        stored = archive.get_meta(key)
        if not isinstance(stored, dict):
            stored = self.plan_for(archive, generation).to_dict()
            archive.set_meta(key, stored)
        plan = Plan.from_dict(stored)
        self._choices[generation] = plan.choices
        return plan

    def model_for(self, request: ProposalRequest) -> str:
        choices = self._choices.get(request.generation)
        if choices is None or request.index >= len(choices):
            raise RuntimeError(f"generation {request.generation} was not prepared (prepare_generation)")
        return choices[request.index]

    def propose(self, request: ProposalRequest) -> Proposal:
        model = self.model_for(request)
        proposal = self.members[model].propose(request)
        return dataclasses.replace(proposal, extra={**proposal.extra, "origin": f"llm:{model}", "model": model})

    def preflight(self) -> None:
        for member in self.members.values():
            member.preflight()

    def write_lessons(self, facts: str, rows: Sequence[Any], max_chars: int) -> Any:
        """The running lessons are written by the first model (``lossforge.discovery.search.lessons``)."""
        return next(iter(self.members.values())).write_lessons(facts, rows, max_chars)

    def close(self) -> None:
        for member in self.members.values():
            member.close()


__all__ = ["META_PREFIX", "EnsembleProposer"]
