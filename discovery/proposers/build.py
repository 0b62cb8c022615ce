"""Building the proposer a run config asks for, and checking its endpoint before anything is spent."""

from __future__ import annotations

from lossforge.discovery.config import RunConfig
from lossforge.discovery.loop_error import LoopError
from lossforge.discovery.proposers.base import ProposerBase
from lossforge.discovery.proposers.prompting import PromptRenderer, PromptSettings, tasks_brief
from lossforge.evaluate.llm import Budget, LLMError


def build_proposer(config: RunConfig, spent: tuple[int, int, float] = (0, 0, 0.0)) -> ProposerBase:
    """``evolve`` or ``openai`` as ``config.proposer.kind`` says; ``spent`` (calls, tokens, cost) is what a
    resumed run already used of its budget. Raises ``LoopError`` for a proposer that cannot be built."""
    if config.proposer.kind == "evolve":
        from lossforge.discovery.proposers.evolve import EvolveProposer

        return EvolveProposer.from_config(config)
    from lossforge.discovery.proposers.openai import OpenAIProposer

    search, limits = config.search, config.budget
    calls, tokens, cost = spent
    budget = Budget(
        limits.max_llm_calls, limits.max_tokens, limits.max_cost_usd, calls=calls, tokens=tokens, cost_usd=cost
    )
    renderer = PromptRenderer(
        tasks_brief(
            config.training.run_tasks,
            config.training.beta,
            aggregate=config.search.aggregate,
            baseline=config.search.baseline,
        ),
        PromptSettings(
            best_k=search.history_best_k,
            recent_m=search.history_recent_m,
            json_hint=not config.proposer.json_mode,
            niches_explore=search.niches_explore if search.niches else None,
        ),
    )
    try:
        if config.proposer.models:
            return _ensemble(config, renderer, budget)
        return OpenAIProposer.from_config(config.proposer, renderer, budget=budget, repair_rounds=search.repair_rounds)
    except (ValueError, LLMError) as exc:
        raise LoopError(str(exc)) from None


def _ensemble(config: RunConfig, renderer: PromptRenderer, budget: Budget) -> ProposerBase:
    """One ``OpenAIProposer`` per ``proposer.models`` entry (unset fields from ``proposer``), one shared budget."""
    from lossforge.discovery.proposers.bandit import Bandit
    from lossforge.discovery.proposers.ensemble import EnsembleProposer
    from lossforge.discovery.proposers.openai import OpenAIProposer

    p, search = config.proposer, config.search
    members = {}
    for entry in p.models:
        own = p.model_copy(
            update={
                "model": entry.model,
                "base_url": entry.base_url or p.base_url,
                "api_key_env": entry.api_key_env or p.api_key_env,
                "prices": {**p.prices, entry.model: entry.prices} if entry.prices else p.prices,
                "models": (),
            }
        )
        members[entry.model] = OpenAIProposer.from_config(
            own, renderer, budget=budget, repair_rounds=search.repair_rounds
        )
    bandit = Bandit(p.bandit, tuple(members), {entry.model: entry.weight for entry in p.models})
    return EnsembleProposer(
        members,
        bandit,
        run_seed=config.seed,
        population=search.population,
        baseline=search.baseline,
        reward=p.bandit_reward,
        direction=renderer.brief.direction,
    )


def preflight(proposer: ProposerBase) -> None:
    """Fail fast on a bad endpoint, key or model (``LoopError``), for proposers that can tell."""
    try:
        proposer.preflight()
    except LLMError as exc:
        raise LoopError(str(exc)) from None


__all__ = ["build_proposer", "preflight"]
