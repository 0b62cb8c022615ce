"""Typed configuration of a discovery run (`lossforge run`), loaded from YAML and command-line overrides.

A YAML file holds the same groups as ``RunConfig`` (see ``examples/run.yaml``)::

    proposer: {kind: openai, model: gpt-4o-mini}
    search: {generations: 3, population: 4}
    training: {task: sentiment, beta: 0.1}

Overrides (``load_config(path, overrides)``) are a mapping of *dotted* keys to values, applied on top of the
YAML: ``{"search.generations": 5, "proposer.model": "gpt-4o"}``; top-level fields are plain keys
(``{"seed": 3, "out": "runs/a"}``). A value of ``None`` means "flag not given" and is skipped, so a CLI can pass
every option straight through. Every problem is collected and raised as one ``ConfigError`` whose message
quotes the offending value and says what would be valid. The groups themselves are ``config_groups``'.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from lossforge.discovery.config_groups import (
    BudgetConfig,
    ExecutionConfig,
    FrozenModel,
    ProposerConfig,
    SearchConfig,
    TrainingConfig,
)
from lossforge.discovery.seeds import HELDOUT_BASE, search_seeds
from lossforge.discovery.suites import SUITES
from lossforge.evaluate.config_error import ConfigError
from pydantic import BaseModel, Field, ValidationError, model_validator

# CLI flag that sets a config field, quoted in messages so users learn the fix in the syntax they typed.
_FLAGS = {"proposer.model": "--llm-model", "proposer.kind": "--proposer", "out": "--out"}


class RunConfig(FrozenModel):
    """The whole configuration of a discovery run; ``resolved()`` is what the archive stores."""

    proposer: ProposerConfig = Field(default_factory=ProposerConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    seed: int = 0
    out: Path | None = None  # None: ./lossforge-runs/<timestamp>, chosen when the run starts (default_out)

    @model_validator(mode="before")
    @classmethod
    def _suite_holds_out(cls, data: Any) -> Any:
        """``training.suite``'s held-out tasks are the confirmation's tasks unless ``search.confirm.tasks`` is given."""
        if not isinstance(data, dict) or not isinstance(data.get("training"), dict):
            return data
        name = data["training"].get("suite")
        if name is None or name not in SUITES:  # an unknown suite is TrainingConfig's to report
            return data
        search = dict(data.get("search") or {}) if isinstance(data.get("search") or {}, dict) else data["search"]
        if not isinstance(search, dict):
            return data
        confirm = search.get("confirm") or {}
        if isinstance(confirm, dict) and not confirm.get("tasks"):
            search["confirm"] = {**confirm, "tasks": list(SUITES[name].heldout)}
        return {**data, "search": search}

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        # Collected, not raised one at a time, so a user fixes everything in one edit.
        problems: list[str] = []
        p, b = self.proposer, self.budget
        if p.models and (p.kind != "openai" or len({m.model for m in p.models}) != len(p.models)):
            problems.append("proposer.models needs proposer.kind 'openai' and distinct model names")
        if p.kind == "openai" and not p.model and not p.models:
            problems.append("openai proposer requires proposer.model (--llm-model)")
        for name, value in (("model", p.model), ("base_url", p.base_url)):
            if p.kind == "evolve" and value:
                problems.append(
                    f"proposer.{name} is {value!r}, but the evolve proposer uses no LLM: drop it, or choose the "
                    "openai proposer (proposer.kind openai, --proposer openai)"
                )
        if p.kind == "openai" and b.max_cost_usd is not None and p.model and p.price() is None:
            problems.append(
                f"budget.max_cost_usd is {b.max_cost_usd!r} but proposer.prices has no entry for model "
                f"{p.model!r}; add proposer.prices.{p.model} {{input_per_mtok, output_per_mtok}} or drop the cost limit"
            )
        seeds = search_seeds(self.seed, self.training.seeds)
        if isinstance(self.training.seeds, int) and not (0 <= seeds[0] and seeds[-1] < HELDOUT_BASE):
            problems.append(
                f"seed {self.seed!r} with training.seeds {self.training.seeds!r} gives search seeds outside "
                f"[0, {HELDOUT_BASE}); seeds from {HELDOUT_BASE} up are held out for confirmation"
            )
        if self.search.rank_by == "lcb" and len(seeds) < 2:
            problems.append("search.rank_by 'lcb' needs training.seeds >= 2 (one seed has no confidence interval)")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def search_seeds(self) -> tuple[int, ...]:
        """The seeds every candidate of this run is trained on (``lossforge.discovery.seeds``)."""
        return search_seeds(self.seed, self.training.seeds)

    def resolved(self) -> dict[str, Any]:
        """Every field with defaults filled in, JSON-serialisable."""
        return self.model_dump(mode="json")


def _describe(error: Any, root: type[BaseModel]) -> list[str]:
    """One pydantic error -> sentences quoting the value and what would be valid."""
    loc = ".".join(str(part) for part in error["loc"])
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", ", ")
        return [f"{loc}: {value!r} is not one of {expected}"]
    if kind == "extra_forbidden":
        parent = _model_at(root, error["loc"][:-1])
        valid = ", ".join(parent.model_fields) if parent else "?"
        return [f"{loc}: unknown key; valid keys here: {valid}"]
    if kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
        if not loc:  # a cross-check of the whole config: already phrased with field names
            return message.split("\n")
        return [f"{loc}: {message}"]
    if kind == "missing":
        return [f"{loc}: required"]
    msg = error["msg"][0].lower() + error["msg"][1:]
    return [f"{loc}: {value!r} is invalid: {msg}"]


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any], problems: list[str]) -> None:
    for key, value in overrides.items():
        if value is None:
            continue
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"override {key}: {part!r} is not a group of settings")
                break
            node = child
        else:
            node[parts[-1]] = list(value) if isinstance(value, tuple) else value


def build_config(data: dict[str, Any], *, source: str | None = None) -> RunConfig:
    """Validate a plain mapping into a ``RunConfig``; raises ``ConfigError`` with every problem."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        problems = [line for error in exc.errors() for line in _describe(error, RunConfig)]
        raise ConfigError(problems, source) from None


def default_out() -> Path:
    """Where a run goes when no ``out`` is given: ``./lossforge-runs/<timestamp>``."""
    return Path("lossforge-runs") / time.strftime("%Y%m%d-%H%M%S")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read YAML at ``path`` (None: defaults only), apply dotted-key ``overrides``, validate."""
    return build_config(read_config(path, overrides), source=str(path) if path is not None else None)


def read_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The mapping ``load_config`` validates: YAML at ``path`` with dotted-key ``overrides`` applied. A command
    reads it to phrase a flag's problem in the flag's terms before validation phrases it in the config's."""
    data: dict[str, Any] = {}
    source = str(path) if path is not None else None
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"cannot read config file: {exc.strerror or exc}"], source) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"not valid YAML: {exc}"], source) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError([f"the top level must be a mapping of groups, got {type(loaded).__name__}"], source)
        data = loaded or {}
    problems: list[str] = []
    _apply_overrides(data, dict(overrides or {}), problems)
    if problems:
        raise ConfigError(problems, source)
    return data


__all__ = ["ConfigError", "RunConfig", "build_config", "default_out", "load_config", "read_config"]
