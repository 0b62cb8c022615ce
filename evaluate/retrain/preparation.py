"""``prepare(config)``: everything about a retrain that can be wrong, found before any process starts.

The process count against the visible GPUs (or the cores), the tracker and the output directory; the recipe as
this machine trains it (``DPOConfig``/``LoraConfig`` constructed, the options ``CandidateDPOTrainer`` does not
support refused); the model (a GGUF file converted here, once) and its tokenizer; the dataset's pairs and held-out
split; the judge's question file and the lm-eval tasks; and each loss, re-checked by ``lossforge.evaluate.check``,
with a warning for a batch-coupled loss whose statistics will be taken per micro-batch and per rank. The outcome,
``Prepared``, is what the launch and the evaluation need (:mod:`~lossforge.evaluate.retrain.pipeline`).
"""

from __future__ import annotations

import tempfile
import types
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lossforge.evaluate.config_error import ConfigError
from lossforge.evaluate.gpus import visible_gpus
from lossforge.evaluate.model_source import resolve_model
from lossforge.evaluate.retrain import devices
from lossforge.evaluate.retrain.config import LossSpec, RetrainConfig
from lossforge.evaluate.retrain.data import Splits, load_splits
from lossforge.evaluate.retrain.errors import CandidateRejected
from lossforge.evaluate.retrain.harness import LmEvalPlan
from lossforge.evaluate.retrain.recipe import Recipe, build_configs


@dataclass
class Prepared:
    """The outcome of ``prepare``: what the launch and the evaluation need, already validated."""

    config: RetrainConfig
    recipe: Recipe
    splits: Splits
    accelerate_config: Path | None
    gpus: int
    cores: int
    model_path: str  # what from_pretrained reads: config.model, or its converted GGUF checkpoint
    notes: list[str] = field(default_factory=list)
    warnings: dict[str, list[str]] = field(default_factory=dict)  # loss name -> its warnings
    judge: Any = None
    lm_eval: LmEvalPlan | None = None
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)


def prepare(config: RetrainConfig) -> Prepared:
    """Validate everything before launching; raises ``ConfigError``/``TaskError``/``CandidateRejected``."""
    from lossforge.evaluate.retrain.evaluation import HeldOutPairs, judge_task

    gpus, cores = len(visible_gpus()), devices.cpu_cores()
    accelerate_config = config.accelerate_config or (config.recipe.accelerate_config if gpus else None)
    _refuse_machine_problems(config, accelerate_config, gpus=gpus, cores=cores)
    recipe, notes = _adapt_recipe(config.recipe, num_processes=config.num_processes, gpus=gpus)
    if config.recipe.accelerate_config is not None and accelerate_config is None:
        notes.append(
            f"no GPU visible: the recipe's accelerate config {config.recipe.accelerate_config.name} is for "
            "GPUs and is not used; CPU DDP over gloo instead"
        )
    max_length = int(recipe.training.get("max_length") or 1024)
    # Resolved once here, in the parent: the ranks then all read one converted checkpoint instead of each
    # converting a GGUF file. A bad location raises ModelSourceError, a TaskError.
    model_path = resolve_model(config.model)
    # Reading the model's config says "not found" (with the fix) before anything is launched.
    _ = HeldOutPairs(model_path, config.dataset, [], max_length=max_length, batch_size=1).model_config
    splits = load_splits(
        config.dataset, train_split=config.train_split, test_split=config.test_split, test_fraction=config.test_fraction
    )
    _refuse_untokenizable(model_path, splits, max_length)
    judge = judge_task(config.judge, model=model_path, dataset=config.dataset) if config.judge else None
    lm_eval = (
        LmEvalPlan.build(config.lm_eval, include=config.lm_eval_include, limit=config.lm_eval_limit)
        if config.lm_eval
        else None
    )
    prepared = Prepared(
        config, recipe, splits, accelerate_config, gpus, cores, model_path, notes, judge=judge, lm_eval=lm_eval
    )
    for loss in (config.loss, *([config.baseline] if config.baseline else [])):
        prepared.profiles[loss.name] = _checked_profile(loss, static_policy=config.static_policy)
        warning = _batch_coupling_warning(loss.name, prepared.profiles[loss.name], recipe, config.num_processes)
        if warning:
            prepared.warnings.setdefault(loss.name, []).append(warning)
    return prepared


def _refuse_untokenizable(model: str, splits: Splits, max_length: int) -> None:
    """Tokenize one pair as training will (a conversational dataset needs a chat template), before the launch."""
    from lossforge.evaluate.tasks.base import TaskError
    from lossforge.evaluate.tasks.hf import encode_pair
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise TaskError(f"could not load the tokenizer of model '{model}': {exc}") from None
    encode_pair(tokenizer, splits.train[0], max_length)


def _refuse_machine_problems(config: RetrainConfig, accelerate_config: Path | None, *, gpus: int, cores: int) -> None:
    """Process count, tracker, accelerate config and output directory, all reported at once."""
    problems = [
        problem
        for problem in (
            devices.process_count_problem(config.num_processes, gpus=gpus, cores=cores),
            devices.tracker_problem(config.report_to),
        )
        if problem
    ]
    if accelerate_config is not None and not accelerate_config.is_file():
        problems.append(f"accelerate config {accelerate_config} not found")
    if (config.out / "metrics.json").exists():
        problems.append(f"out {config.out} already holds a retrain (metrics.json); choose another directory")
    if problems:
        raise ConfigError(problems)


def _adapt_recipe(recipe: Recipe, *, num_processes: int, gpus: int) -> tuple[Recipe, list[str]]:
    """The recipe as this machine trains it (optimizer, default precision), validated by ``DPOConfig`` and by
    ``CandidateDPOTrainer``'s own rule for the options its loss override would silently ignore."""
    from lossforge.evaluate.training.candidate_trainer import CandidateDPOTrainer

    optimizer, optimizer_note = devices.choose_optimizer(
        str(recipe.training.get("optim", "adamw_torch")), on_cuda=bool(gpus)
    )
    precision, precision_note = devices.default_precision(recipe.training, on_cuda=bool(gpus))
    adapted = replace(recipe, training={**recipe.training, "optim": optimizer, **precision})
    with tempfile.TemporaryDirectory() as scratch:
        training, _ = build_configs(
            adapted, num_processes=num_processes, output_dir=scratch, use_cpu=not gpus, report_to="none"
        )
    try:  # the rule reads only ``self.args``
        CandidateDPOTrainer._refuse_unsupported_options(types.SimpleNamespace(args=training))  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError([str(exc)], source=recipe.name) from None
    return adapted, [*recipe.notes, optimizer_note, precision_note]


def _batch_coupling_warning(name: str, profile: dict[str, Any], recipe: Recipe, num_processes: int) -> str | None:
    accumulation = recipe.gradient_accumulation(num_processes)
    if not profile.get("batch_coupled") or (accumulation == 1 and num_processes == 1):
        return None
    return (
        f"{name} couples the pairs of a batch (batch statistics); trained with gradient accumulation "
        f"{accumulation} on {num_processes} process(es), its statistics are taken per micro-batch of each rank, "
        "not over the optimizer step's whole batch"
    )


def _checked_profile(loss: LossSpec, *, static_policy: bool) -> dict[str, Any]:
    from lossforge.evaluate import check

    report = check(loss.source, fmt="python", path=loss.name, static_policy=static_policy)
    if not report.passed:
        raise CandidateRejected(f"the checker rejects {loss.name} at stage {report.stage}: {'; '.join(report.errors)}")
    return report.profile or {}


__all__ = ["Prepared", "prepare"]
