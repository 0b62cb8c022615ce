"""The groups of a run's configuration (``RunConfig`` in ``lossforge.discovery.config`` holds one of each): who
proposes (``ProposerConfig``, its ensemble models and prices), the LLM budget (``BudgetConfig``), the shape of the
search (``SearchConfig``, with successive halving ``FidelityConfig`` and the confirmation ``ConfirmConfig``), how
each candidate is trained (``TrainingConfig``) and where trainings run (``ExecutionConfig``). Each checks its own
fields; checks across groups are ``RunConfig``'s.
"""

from __future__ import annotations

from typing import Any, Literal

from lossforge.candidates import BUILTIN_NAMES
from lossforge.discovery.executors import DEFAULT_CPU_WORKERS, GPU_MEMORY_PER_WORKER_GB
from lossforge.discovery.seeds import HELDOUT_BASE
from lossforge.discovery.suites import suite
from lossforge.evaluate.tasks import TASK_NAMES, TaskError, load_task_class, task_name_problem
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class FrozenModel(BaseModel):
    """Immutable, and refuses unknown keys (a typo is an error, never a silently ignored setting)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelPrice(FrozenModel):
    """USD per million tokens, for cost accounting against ``budget.max_cost_usd``."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class EnsembleModel(FrozenModel):
    """One model of an LLM ensemble (``proposer.models``); unset fields take the proposer's own."""

    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    prices: ModelPrice | None = None
    weight: float = Field(default=1.0, gt=0)  # multiplies the model's bandit index; 1 is neutral


class ProposerConfig(FrozenModel):
    """Who writes proposals: ``evolve`` (offline, no cost) or ``openai`` (any OpenAI-compatible endpoint)."""

    kind: Literal["evolve", "openai"] = "evolve"
    model: str | None = None
    base_url: str | None = None  # None: the openai package's default (or $OPENAI_BASE_URL)
    # The key is read from the environment, never stored in the config: the resolved config is archived.
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    json_mode: bool = True  # response_format=json_object where the server supports it
    # "merge": fold the system prompt into the first user message, for servers/models without a system role.
    system_prompt: Literal["system", "merge"] = "system"
    concurrency: int = Field(default=4, ge=1, le=256)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)  # keyed by model name
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=50)
    # LLM ensemble (docs/CONFIG.md, "LLM ensembles"): a bandit picks each proposal's model; empty: ``model`` alone.
    models: tuple[EnsembleModel, ...] = ()
    bandit: Literal["ucb1", "thompson"] = "ucb1"
    bandit_reward: Literal["per_call", "per_dollar"] = "per_call"

    def price(self) -> ModelPrice | None:
        return self.prices.get(self.model) if self.model else None


class BudgetConfig(FrozenModel):
    """Hard limits on LLM use; None means unlimited. The loop stops proposing when one is reached."""

    max_llm_calls: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, gt=0)


def _check_task(task: str) -> str:
    if task_name_problem(task) is not None:  # config errors quote the value and list the choices
        raise ValueError(
            f"{task!r} is not one of {', '.join(repr(n) for n in TASK_NAMES)} (or 'package.module:ClassName')"
        )
    if ":" in task:  # a user's own Task class, "package.module:ClassName": it must load
        try:
            load_task_class(task)
        except TaskError as exc:
            raise ValueError(str(exc)) from None
    return task


class ConfirmConfig(FrozenModel):
    """Retraining of the winners on held-out seeds at the end of a run (``lossforge confirm`` does it on demand).

    ``top_k`` best candidates, the baseline and the best library loss of generation 0 are retrained on ``seeds``
    fresh seeds the search never used, on the run's task and on each of ``tasks`` (transfer), at the run's beta
    or at each of ``betas`` (robustness). On by default (``{top_k: 3, seeds: 5}``): it costs up to (top_k + 2) x
    seeds trainings per task and beta, 25 at the defaults, against the 16 of a default search, and it is what
    tells a real winner from the winner's curse. ``top_k: 0`` turns it off. A run with no trained discovered
    candidate (``generations: 0``) still confirms the best library loss against the baseline.
    """

    top_k: int = Field(default=3, ge=0)
    seeds: int = Field(default=5, ge=2, le=1000)
    tasks: tuple[str, ...] = ()
    betas: tuple[float, ...] = ()

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_task(task) for task in tasks)

    @field_validator("betas")
    @classmethod
    def _positive_betas(cls, betas: tuple[float, ...]) -> tuple[float, ...]:
        bad = [b for b in betas if not b > 0]
        if bad:
            raise ValueError(f"every beta must be > 0, got {', '.join(repr(b) for b in bad)}")
        return betas


class FidelityConfig(FrozenModel):
    """Successive halving: each generation's admitted candidates train first at a low fidelity.

    Rung r trains at ``steps_fractions[r]`` of the budget's steps on the first search seed only (and the first
    of several ``training.tasks``); the best
    ``keep`` share of a rung (at least one) goes on to the next; the last rung (fraction 1.0) pays the full
    budget on every search seed. Recommended: ``{steps_fractions: [0.25, 1.0], keep: 0.5}``.
    """

    steps_fractions: tuple[float, ...] = (0.25, 1.0)
    keep: float = Field(default=0.5, gt=0, le=1)

    @field_validator("steps_fractions")
    @classmethod
    def _rungs(cls, fractions: tuple[float, ...]) -> tuple[float, ...]:
        if len(fractions) < 2 or fractions[-1] != 1.0:
            raise ValueError(f"{list(fractions)!r} must list at least two rungs and end with the full budget, 1.0")
        if any(not 0 < f <= 1 for f in fractions) or list(fractions) != sorted(set(fractions)):
            raise ValueError(f"{list(fractions)!r} must be increasing fractions in (0, 1]")
        return fractions


class SearchConfig(FrozenModel):
    """Shape of the search. Generation 0 trains ``seed_candidates``; ``generations`` counts those after it.

    ``baseline`` (one of ``seed_candidates``) is what every candidate is compared with, seed by seed;
    ``rank_by`` ranks by the mean over seeds or by its lower 95% confidence bound (``lcb``, needs >= 2 seeds).
    """

    generations: int = Field(default=3, ge=0)
    population: int = Field(default=4, ge=1)  # proposals per generation
    repair_rounds: int = Field(default=2, ge=0)
    seed_candidates: tuple[str, ...] = ("dpo", "hinge", "ipo", "kto_pair")
    history_best_k: int = Field(default=5, ge=0)
    history_recent_m: int = Field(default=5, ge=0)
    baseline: str = "dpo"
    rank_by: Literal["mean", "lcb"] = "mean"
    # With several training.tasks: a row's score is the mean of its normalized per-task scores, or the worst of
    # them (``min``), seed by seed (docs/DISCOVERY.md, "Multi-task fitness").
    aggregate: Literal["mean", "min"] = "mean"
    confirm: ConfirmConfig = Field(default_factory=ConfirmConfig)
    fidelity: FidelityConfig | None = None  # None: every candidate trains at the full budget (no halving)
    # Smarter search (issue 11; docs/CONFIG.md, "Near-duplicates"). Distance of gradient directions at or below which a
    # candidate is a near-duplicate of an archived one; None: exact fingerprints only. Recommended: 0.01.
    near_duplicates: float | None = Field(default=None, ge=0, le=2)
    # Running lessons in the prompt every N generations (docs/CONFIG.md, "Running lessons"); 0: off.
    lessons_every: int = Field(default=0, ge=0)
    lessons_max_chars: int = Field(default=600, ge=80, le=4000)
    # Niches over profile traits (docs/CONFIG.md, "Niches"): the axes, None: off; the explore share of the best-k
    # history.
    niches: tuple[str, ...] | None = None
    niches_explore: float = Field(default=0.5, ge=0, le=1)

    @field_validator("niches")
    @classmethod
    def _known_traits(cls, axes: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from lossforge.discovery.search.traits import TRAITS

        if axes is not None and (not axes or len(set(axes)) != len(axes) or not set(axes) <= set(TRAITS)):
            raise ValueError(f"{list(axes)!r} must name distinct traits among {', '.join(TRAITS)}")
        return axes

    @model_validator(mode="after")
    def _baseline_is_a_seed(self) -> SearchConfig:
        if self.baseline not in self.seed_candidates:
            raise ValueError(
                f"baseline {self.baseline!r} must be one of search.seed_candidates "
                f"({', '.join(self.seed_candidates)}): it is trained in generation 0 on the same seeds"
            )
        return self

    @field_validator("seed_candidates")
    @classmethod
    def _known_seeds(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [n for n in names if n not in BUILTIN_NAMES]
        if unknown:
            raise ValueError(
                f"{', '.join(repr(n) for n in unknown)} not in the built-in library; valid: {', '.join(BUILTIN_NAMES)}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"{list(names)!r} names a seed twice")
        return names


class TrainingConfig(FrozenModel):
    """How each candidate is trained and scored. ``steps``/``eval_samples`` None: the task's defaults."""

    task: str = "sentiment"
    # Several tasks (docs/DISCOVERY.md, "Multi-task fitness"): every candidate trains on each on the run's seeds,
    # and its score is ``search.aggregate`` of its per-task scores, each normalized by the baseline's gain over the
    # untrained reference. Empty: the one ``task``. With several, ``task`` is the first and ``task_options`` maps
    # each task to its own options.
    tasks: tuple[str, ...] = ()
    # A built-in suite (``lossforge.discovery.suites``): its search tasks become ``tasks`` and, unless given, its
    # held-out tasks ``search.confirm.tasks`` (the meta-test).
    suite: str | None = None
    beta: float = Field(default=0.1, gt=0)
    steps: int | None = Field(default=None, ge=1)
    eval_samples: int | None = Field(default=None, ge=1)
    task_options: dict[str, Any] = Field(default_factory=dict)
    time_limit_s: float | None = Field(default=None, gt=0)  # per candidate; None: no limit
    # A count N (seeds run seed .. run seed + N - 1) or an explicit list; every candidate trains on each.
    seeds: int | tuple[int, ...] = 1

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        return _check_task(task)

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"{list(tasks)!r} names a task twice")
        return tuple(_check_task(task) for task in tasks)

    @model_validator(mode="before")
    @classmethod
    def _expand_suite(cls, data: Any) -> Any:
        """``suite`` fills ``tasks``; ``task`` defaults to the first of ``tasks`` and may not differ from it."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("suite") is not None:
            chosen = suite(str(data["suite"]))
            given = tuple(data.get("tasks") or ())
            if given and given != chosen.search:
                raise ValueError(
                    f"tasks {list(given)!r} and suite {chosen.name!r} (tasks {list(chosen.search)!r}) both given; "
                    "keep one"
                )
            data["tasks"] = list(chosen.search)
        tasks = tuple(data.get("tasks") or ())
        if tasks:
            if data.get("task") not in (None, tasks[0]):
                raise ValueError(
                    f"task {data['task']!r} is not the first of tasks {list(tasks)!r}; drop task (with several "
                    "tasks it is the first)"
                )
            data["task"] = tasks[0]
        return data

    @model_validator(mode="after")
    def _options_per_task(self) -> TrainingConfig:
        if len(self.run_tasks) < 2:
            return self
        bad = {k: v for k, v in self.task_options.items() if k not in self.run_tasks or not isinstance(v, dict)}
        if bad:
            raise ValueError(
                f"task_options {bad!r}: with several tasks, map each task to its options, "
                f"e.g. {{{self.run_tasks[1]}: {{option: value}}}}"
            )
        return self

    @property
    def run_tasks(self) -> tuple[str, ...]:
        """The tasks every candidate trains on: ``tasks``, or the one ``task``."""
        return self.tasks or (self.task,)

    def options_for(self, task: str) -> dict[str, Any]:
        """The options ``task`` is built with in this run (its entry of ``task_options`` with several tasks)."""
        if len(self.run_tasks) >= 2:
            return dict(self.task_options.get(task, {}))
        return dict(self.task_options) if task == self.task else {}

    @field_validator("seeds")
    @classmethod
    def _valid_seeds(cls, seeds: int | tuple[int, ...]) -> int | tuple[int, ...]:
        if isinstance(seeds, int):
            if seeds < 1:
                raise ValueError(f"{seeds!r} must be a count >= 1 or a list of seeds")
            return seeds
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"{list(seeds)!r} must list at least one seed, each once")
        bad = [s for s in seeds if not 0 <= s < HELDOUT_BASE]
        if bad:
            raise ValueError(
                f"{bad!r} outside [0, {HELDOUT_BASE}): seeds from {HELDOUT_BASE} up are held out for confirmation"
            )
        return seeds


class ExecutionConfig(FrozenModel):
    """Where training runs and how many at once: ``workers`` on CPU; with GPUs, ``workers_per_gpu`` on each, as
    many as its free memory holds at ``gpu_memory_per_worker_gb`` GiB each (none: refused), and ``workers`` does
    not apply. The rule and the memory check: ``lossforge.discovery.executors.LocalExecutor``."""

    executor: Literal["local", "ray"] = "local"
    workers: int = Field(
        default=DEFAULT_CPU_WORKERS, ge=1
    )  # concurrent trainings on CPU, cores // workers threads each
    workers_per_gpu: int = Field(default=1, ge=1)  # concurrent trainings per GPU (--workers-per-gpu)
    gpu_memory_per_worker_gb: float = Field(default=GPU_MEMORY_PER_WORKER_GB, gt=0)  # free GiB a worker needs


__all__ = [
    "BudgetConfig",
    "ConfirmConfig",
    "EnsembleModel",
    "ExecutionConfig",
    "FidelityConfig",
    "FrozenModel",
    "ModelPrice",
    "ProposerConfig",
    "SearchConfig",
    "TrainingConfig",
]
