"""The bandit that picks each proposal's model in an LLM ensemble (``proposer.models``).

Arms are the configured models. A proposal's reward, read from its archive row once it has finished:

- 0 when it never trained (rejected, duplicate) or training failed (diverged, failed, timeout);
- 0.5 when it trained but did not beat its reference, 1 when it did; the reference is its scored parent's
  score, else the score of ``search.baseline`` in generation 0 (higher or lower is better per the task);
- with ``proposer.bandit_reward: per_dollar``, divided by the dollars its LLM calls cost (a free call counts
  as one cent, so an unpriced model is neither infinitely good nor excluded).

Policies (``proposer.bandit``): UCB1 (Auer, Cesa-Bianchi & Fischer 2002, "Finite-time analysis of the
multiarmed bandit problem": mean + sqrt(2 ln N / n), every arm once first) and Thompson sampling (Thompson
1933; Beta(1 + successes, 1 + failures) with the reward as a fractional success, per-dollar rewards squashed
into [0, 1] by r / (1 + r)). An arm's ``weight`` multiplies its index (or its sample): 1 is neutral.

The state of generation g is a pure function of the archive rows of generations < g (complete, so it is the
same in a resumed run), and the choices of its slots are made in index order, each counting the earlier
slots' choices as plays without reward yet (so one generation spreads over arms instead of repeating one),
Thompson drawing from ``random.Random(slot seed)``. The ensemble archives both (``Plan.to_dict``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from lossforge.discovery.search.ranking import Direction
from lossforge.evaluate.statuses import SCORED_STATUS, is_ranked

Policy = Literal["ucb1", "thompson"]
RewardKind = Literal["per_call", "per_dollar"]
FREE_CALL_USD = 0.01


@dataclass
class ArmStats:
    """What an arm has earned: plays, summed reward, dollars spent."""

    plays: int = 0
    reward: float = 0.0
    cost_usd: float = 0.0

    @property
    def mean(self) -> float:
        return self.reward / self.plays if self.plays else 0.0


@dataclass(frozen=True)
class Plan:
    """One generation's bandit state (before its choices) and the model chosen for each slot index."""

    generation: int
    state: dict[str, ArmStats]
    choices: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "state": {arm: asdict(s) for arm, s in self.state.items()},
            "choices": list(self.choices),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        state = {arm: ArmStats(**values) for arm, values in data["state"].items()}
        return cls(generation=int(data["generation"]), state=state, choices=tuple(data["choices"]))


def _beats(score: float, reference: float, direction: Direction) -> bool:
    return score > reference if direction == "higher" else score < reference


def proposal_reward(
    row: Any, reference: float | None, cost_usd: float, kind: RewardKind, direction: Direction = "higher"
) -> float:
    """The reward of one finished proposal row (see the module docstring)."""
    if not is_ranked(row):
        value = 0.0
    else:
        value = 1.0 if reference is not None and _beats(float(row.score), reference, direction) else 0.5
    return value / max(cost_usd, FREE_CALL_USD) if kind == "per_dollar" else value


def arm_state(
    rows: Sequence[Any],
    arms: Sequence[str],
    *,
    baseline: float | None,
    costs: Mapping[int, float],
    kind: RewardKind,
    direction: Direction = "higher",
) -> dict[str, ArmStats]:
    """Each arm's stats from archive rows (origin ``llm:<model>``; ``costs`` by row id), in arm order."""
    state = {arm: ArmStats() for arm in arms}
    scores = {row.id: row.score for row in rows if row.status == SCORED_STATUS and row.score is not None}
    for row in rows:
        arm = (row.origin or "").removeprefix("llm:")
        if not (row.origin or "").startswith("llm:") or arm not in state or row.status == "pending":
            continue
        parent = next((scores[p] for p in row.parents if p in scores), None)
        cost = costs.get(row.id, 0.0)
        stats = state[arm]
        stats.plays += 1
        stats.cost_usd += cost
        stats.reward += proposal_reward(row, parent if parent is not None else baseline, cost, kind, direction)
    return state


@dataclass
class Bandit:
    """A policy over named arms with per-arm weights."""

    policy: Policy
    arms: tuple[str, ...]
    weights: dict[str, float] = field(default_factory=dict)

    def choose(self, state: Mapping[str, ArmStats], seed: int) -> str:
        """The arm for one slot (ties: the earlier arm in config order)."""
        unplayed = [arm for arm in self.arms if state[arm].plays == 0]
        if self.policy == "ucb1":
            if unplayed:
                return unplayed[0]
            total = sum(state[arm].plays for arm in self.arms)
            index = {
                arm: self.weights.get(arm, 1.0)
                * (state[arm].mean + math.sqrt(2.0 * math.log(total) / state[arm].plays))
                for arm in self.arms
            }
        else:
            rng = random.Random(f"bandit:{seed}")
            index = {}
            for arm in self.arms:
                s = state[arm]
                # Per-dollar rewards can exceed 1: squash each play's mean into [0, 1] for the Beta posterior.
                success = s.plays * (s.mean / (1.0 + s.mean) if s.mean > 1.0 else s.mean)
                index[arm] = self.weights.get(arm, 1.0) * rng.betavariate(1.0 + success, 1.0 + s.plays - success)
        return max(self.arms, key=lambda arm: (index[arm], -self.arms.index(arm)))

    def plan(self, generation: int, state: Mapping[str, ArmStats], seeds: Sequence[int]) -> Plan:
        """The choices of one generation's slots, in index order (``seeds``: each slot's seed)."""
        start = {arm: ArmStats(**asdict(s)) for arm, s in state.items()}
        running = {arm: ArmStats(**asdict(s)) for arm, s in state.items()}
        choices = []
        for seed in seeds:
            arm = self.choose(running, seed)
            choices.append(arm)
            running[arm].plays += 1  # a play whose reward is not known yet
        return Plan(generation=generation, state=start, choices=tuple(choices))


__all__ = ["ArmStats", "Bandit", "Plan", "Policy", "RewardKind", "arm_state", "proposal_reward"]
