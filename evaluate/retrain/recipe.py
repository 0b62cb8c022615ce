"""Retrain recipes: YAML files of ``trl.DPOConfig`` fields plus a ``lora:`` block of ``peft.LoraConfig`` fields.

Two ship with the package (``recipes/``): ``lora``, the reference LoRA DPO settings, and ``full``,
DiscoPOP's zephyr-7b-gemma full fine-tuning run (arXiv 2406.08414) with a DeepSpeed ZeRO-3 accelerate config.
A recipe may also hold

- ``effective_batch_size``: per-device batch x processes x accumulation; the accumulation is derived from
  it for the number of processes of the launch, and must divide (``Recipe.training_fields``);
- ``accelerate_config``: an accelerate config file, relative to the recipe file, used where GPUs are visible.

``--set key=value`` overrides any field (``lora.r=8`` for the block, ``lora=null`` for full fine-tuning);
values are parsed as YAML. Every problem is collected before raising one :class:`ConfigError` that names
the offending field and the valid ones (torchtune's ``config/_errors.py`` habit). Fields the command owns
(``output_dir``, ``report_to``) are refused with the flag that sets them.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lossforge.evaluate.config_error import ConfigError

RECIPE_NAMES: tuple[str, ...] = ("lora", "full")
RECIPE_KEYS: tuple[str, ...] = ("lora", "effective_batch_size", "accelerate_config")
COMMAND_FIELDS: dict[str, str] = {"output_dir": "--out", "report_to": "--report-to"}


def recipes_dir() -> Path:
    """The directory of the shipped recipes (package data)."""
    return Path(str(importlib.resources.files("lossforge.evaluate.retrain").joinpath("recipes")))


HOUR_S, DAY_S = 3600, 24 * 3600


@dataclass(frozen=True)
class Recipe:
    """A resolved recipe.

    Attributes:
        name: ``lora``, ``full`` or the path of a user's recipe file.
        training: ``DPOConfig`` keyword arguments (without the accumulation when ``effective_batch_size`` is set).
        lora: ``LoraConfig`` keyword arguments; ``None`` is full fine-tuning.
        effective_batch_size: global batch per optimizer step, or ``None`` (accumulation given directly).
        accelerate_config: an accelerate config file for GPU launches, or ``None``.
    """

    name: str
    training: dict[str, Any]
    lora: dict[str, Any] | None = None
    effective_batch_size: int | None = None
    accelerate_config: Path | None = None
    overrides: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())  # what loading changed or warns about, for the log

    @property
    def seed(self) -> int:
        return int(self.training.get("seed", 42))  # DPOConfig's default

    def gradient_accumulation(self, num_processes: int) -> int:
        """Accumulation steps for ``num_processes`` ranks (derived from ``effective_batch_size`` when set)."""
        if self.effective_batch_size is None:
            return int(self.training.get("gradient_accumulation_steps", 1))
        per_step = int(self.training.get("per_device_train_batch_size", 8)) * num_processes
        if self.effective_batch_size % per_step:
            raise ConfigError(
                [
                    (
                        f"effective_batch_size {self.effective_batch_size} is not a multiple of "
                        f"per_device_train_batch_size x processes = {per_step}; change one of them "
                        "(--set effective_batch_size=..., --set per_device_train_batch_size=..., --num-processes)"
                    )
                ],
                source=self.name,
            )
        return self.effective_batch_size // per_step

    def default_timeout_s(self) -> float:
        """``lossforge retrain --timeout``'s default for one launch: 1 h of start-up, loading and saving plus
        5 min per optimizer step when the recipe sets ``max_steps`` (70 min for a 2-step smoke run, 17.7 h for
        the lora recipe's 200), else 24 h (the full recipe trains by epochs); never more than 24 h. Generous on
        purpose: it stops a launch that hangs, not a slow one."""
        max_steps = int(self.training.get("max_steps", -1) or -1)
        return float(min(DAY_S, HOUR_S + 300 * max_steps)) if max_steps > 0 else float(DAY_S)

    def training_fields(self, num_processes: int) -> dict[str, Any]:
        """``DPOConfig`` keyword arguments for a launch on ``num_processes`` ranks."""
        return {**self.training, "gradient_accumulation_steps": self.gradient_accumulation(num_processes)}

    def resolved(self, num_processes: int) -> dict[str, Any]:
        """What ``recipe.yaml`` in the output holds: every field as trained, the accumulation included."""
        out: dict[str, Any] = {"recipe": self.name, **self.training_fields(num_processes)}
        if self.effective_batch_size is not None:
            out["effective_batch_size"] = self.effective_batch_size
        out["lora"] = self.lora
        if self.overrides:
            out["overrides"] = list(self.overrides)
        return out


def load_recipe(spec: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """``lora``, ``full`` or a YAML file, with ``key=value`` overrides applied; validated field by field."""
    path = _recipe_path(spec)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError([f"a recipe is a mapping of fields, got {type(data).__name__}"], source=str(path))
    name = str(spec)
    recipe_steps, recipe_warmup = data.get("max_steps"), data.get("warmup_steps")
    problems: list[str] = []
    for override in overrides:
        problems += apply_override(data, override)
    problems += field_problems(data)
    chosen = {override.partition("=")[0].strip() for override in overrides}
    warmup_note = None if problems else _fit_warmup(data, recipe_steps, recipe_warmup, "warmup_steps" in chosen)
    data = {key: _number(value) for key, value in data.items()}
    if isinstance(data.get("lora"), dict):
        data["lora"] = {key: _number(value) for key, value in data["lora"].items()}
    if problems:
        raise ConfigError(problems, source=name)
    lora = data.pop("lora", None)
    effective = data.pop("effective_batch_size", None)
    accelerate_config = data.pop("accelerate_config", None)
    return Recipe(
        name=name,
        training=data,
        lora=dict(lora) if lora is not None else None,
        effective_batch_size=int(effective) if effective is not None else None,
        accelerate_config=(path.parent / accelerate_config).resolve() if accelerate_config else None,
        overrides=tuple(overrides),
        notes=(warmup_note,) if warmup_note else (),
    )


def _fit_warmup(data: dict[str, Any], recipe_steps: Any, recipe_warmup: Any, warmup_chosen: bool) -> str | None:
    """Keep the warm-up inside the training when ``--set max_steps`` shortens it; a note saying what happened.

    A warm-up of as many steps as the training (the lora recipe's 100 under ``--set max_steps=4``) keeps the
    learning rate below its peak throughout, so the model barely moves. When ``max_steps`` was overridden and
    ``warmup_steps`` was not, the warm-up is scaled to the recipe's own share of its steps (100 of 200: half);
    when both were set, it is the user's choice, and the note warns. A float ``warmup_steps`` is a ratio
    already and scales by itself.
    """
    steps, warmup = data.get("max_steps"), data.get("warmup_steps")
    if not (isinstance(steps, int) and steps > 0 and isinstance(warmup, int) and warmup >= steps):
        return None
    if warmup_chosen or not (isinstance(recipe_steps, int) and recipe_steps > 0):
        return (
            f"warning: warmup_steps {warmup} >= max_steps {steps}: the learning rate never reaches its peak "
            f"and the model barely moves; --set warmup_steps=0.1 warms up over a tenth of the steps"
        )
    data["warmup_steps"] = max(1, round(steps * recipe_warmup / recipe_steps))
    return (
        f"warm-up: {data['warmup_steps']} of {steps} steps, the recipe's share ({recipe_warmup} of {recipe_steps}) "
        f"instead of its {recipe_warmup} steps, which max_steps {steps} would never finish; --set warmup_steps=N "
        "chooses another"
    )


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _number(value: Any) -> Any:
    """``"5e-5"`` -> ``5e-05``: YAML 1.1 (PyYAML) reads scientific notation without a dot as a string."""
    return float(value) if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()) else value


def _recipe_path(spec: str | Path) -> Path:
    if str(spec) in RECIPE_NAMES:
        return recipes_dir() / f"{spec}.yaml"
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(
            [f"recipe {str(spec)!r} is neither a shipped recipe ({', '.join(RECIPE_NAMES)}) nor a YAML file"]
        )
    return path


def apply_override(data: dict[str, Any], override: str) -> list[str]:
    """Apply one ``key=value`` (``lora.r=8``) to ``data`` in place; the problems found, if any."""
    key, equals, text = override.partition("=")
    key = key.strip()
    if not equals or not key:
        return [f"--set takes KEY=VALUE, e.g. --set max_steps=50 or --set lora.r=8, got {override!r}"]
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        return [f"--set {key}: {text!r} is not a YAML value ({getattr(exc, 'problem', None) or exc})"]
    head, dot, rest = key.partition(".")
    if not dot:
        data[key] = value
        return []
    if head != "lora" or "." in rest:
        return [f"--set {key}: only the lora block takes dotted keys (lora.FIELD), got {key!r}"]
    if data.get("lora") is None:
        return [f"--set {key}: this recipe has no lora block (full fine-tuning); there is nothing to override"]
    data["lora"][rest] = value
    return []


def field_problems(data: dict[str, Any]) -> list[str]:
    """Unknown or command-owned fields, a malformed lora block, conflicting batch settings."""
    training_fields = dpo_config_fields()
    problems: list[str] = []
    for key in data:
        if key in COMMAND_FIELDS:
            problems.append(f"recipe field {key!r} is set by the command; use {COMMAND_FIELDS[key]}")
        elif key not in training_fields and key not in RECIPE_KEYS:
            valid = sorted(set(training_fields) - set(COMMAND_FIELDS)) + list(RECIPE_KEYS)
            problems.append(_unknown(key, valid, "recipe fields are DPOConfig's plus " + ", ".join(RECIPE_KEYS)))
    lora = data.get("lora")
    if lora is not None:
        if not isinstance(lora, dict):
            problems.append(f"lora must be a mapping of LoraConfig fields (or null for full fine-tuning), got {lora!r}")
        else:
            lora_fields = lora_config_fields()
            problems += [
                _unknown(f"lora.{key}", sorted(lora_fields), "lora fields are LoraConfig's")
                for key in lora
                if key not in lora_fields
            ]
    effective = data.get("effective_batch_size")
    if effective is not None:
        if not isinstance(effective, int) or isinstance(effective, bool) or effective < 1:
            problems.append(f"effective_batch_size must be a positive integer, got {effective!r}")
        if "gradient_accumulation_steps" in data:
            problems.append(
                "effective_batch_size and gradient_accumulation_steps are both set; the accumulation is derived "
                "from effective_batch_size (--set effective_batch_size=null to give the accumulation directly)"
            )
    return problems


def _unknown(key: str, valid: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(key.rpartition(".")[2], valid, n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown field {key!r}{hint}; {what}: {', '.join(valid)}"


def dpo_config_fields() -> dict[str, dataclasses.Field[Any]]:
    from trl import DPOConfig

    return {f.name: f for f in dataclasses.fields(DPOConfig) if f.init}


def lora_config_fields() -> dict[str, dataclasses.Field[Any]]:
    from peft import LoraConfig

    return {f.name: f for f in dataclasses.fields(LoraConfig) if f.init}


def build_configs(
    recipe: Recipe, *, num_processes: int, output_dir: str, use_cpu: bool, report_to: str
) -> tuple[Any, Any]:
    """``(DPOConfig, LoraConfig | None)`` as the training entry point builds them.

    The parent builds them once before launching too, so a value ``DPOConfig``/``LoraConfig`` refuse (a bad
    scheduler name, a negative rate) or one ``CandidateDPOTrainer`` does not support (``loss_type``) fails
    before any process starts.
    """
    from peft import LoraConfig
    from trl import DPOConfig

    fields = recipe.training_fields(num_processes)
    try:
        training = DPOConfig(output_dir=output_dir, use_cpu=use_cpu, report_to=report_to, **fields)
    except (TypeError, ValueError) as exc:
        raise ConfigError([f"DPOConfig refuses the recipe: {exc}"], source=recipe.name) from None
    try:
        lora = LoraConfig(**recipe.lora) if recipe.lora is not None else None
    except (TypeError, ValueError) as exc:
        raise ConfigError([f"LoraConfig refuses the recipe's lora block: {exc}"], source=recipe.name) from None
    return training, lora


__all__ = ["RECIPE_NAMES", "Recipe", "build_configs", "load_recipe", "recipes_dir"]
