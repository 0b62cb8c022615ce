"""``retrain(config)``: train a candidate at full scale under ``accelerate launch``, evaluate it, write the output.

Life of a retrain:

1. ``prepare`` -- everything that can be wrong is found before any process starts: the process count
   against the visible GPUs (or the cores), the tracker, the model (a GGUF file is converted here, once, to
   a cached checkpoint that every rank then reads; its config is read), the dataset (its
   pairs and held-out split are built), the recipe (``DPOConfig``/``LoraConfig`` are constructed, and the
   options ``CandidateDPOTrainer`` does not support refused), the judge's question file, the lm-eval tasks,
   and the candidate itself, re-checked by ``lossforge.evaluate.check`` (static policy and sandbox). A
   batch-coupled loss trained with gradient accumulation or several processes gets a warning: its batch
   statistics are then computed per micro-batch and per rank, not over the optimizer step's batch.
2. ``train_and_evaluate`` -- ``OUT/loss.py`` and ``OUT/recipe.yaml`` are written, the entry point
   (:mod:`lossforge.evaluate.retrain.entry`) runs on every rank, and the parent loads the saved output
   back and evaluates it (:mod:`~lossforge.evaluate.retrain.evaluation`, :mod:`~lossforge.evaluate.retrain.harness`).
3. With a baseline (``dpo``, say), the same recipe, seed and data order train it into ``OUT/baseline/``.
4. ``metrics.json`` (the shape ``lossforge compare`` reads) and ``README.md`` (the model card) close it.

Errors: bad input raises ``ConfigError`` or ``TaskError`` before anything is launched; a candidate the
checker rejects raises ``CandidateRejected``; a launch that fails raises ``TrainingFailed``, one killed after
its timeout ``TrainingTimeout``.

The ranks run the candidate outside the sandbox, so the loss is re-checked by the static policy on the very
text the ranks will read, right before each launch, as well as by the whole checker in ``prepare``; the
launch gets an environment without secrets and is stopped whole on exit, timeout or Ctrl-C
(:mod:`~lossforge.evaluate.retrain.launcher`); each rank locks itself down before the loss first runs
(:mod:`~lossforge.evaluate.retrain.lockdown`). ``metrics.json``'s ``protections`` says which were on.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import tempfile
import time
import types
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from lossforge.evaluate.config_error import ConfigError
from lossforge.evaluate.gpus import visible_gpus
from lossforge.evaluate.model_source import model_identity, resolve_model
from lossforge.evaluate.retrain import devices
from lossforge.evaluate.retrain.data import Splits, load_splits
from lossforge.evaluate.retrain.harness import LmEvalPlan
from lossforge.evaluate.retrain.launcher import LaunchOutcome, describe_protections, plan_launch, run_launch
from lossforge.evaluate.retrain.recipe import Recipe, build_configs

log = logging.getLogger("lossforge.retrain")
BASELINE_DIR = "baseline"
MAX_ERROR_CHARS = 400
_VERSIONED = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


class CandidateRejected(RuntimeError):
    """The checker rejected the loss; nothing was launched."""


class TrainingFailed(RuntimeError):
    """The ``accelerate launch`` exited with an error (its output went to ``OUT/train.log``)."""


class TrainingTimeout(TrainingFailed):
    """The launch ran past its timeout; every process of it was killed."""


@dataclass(frozen=True)
class LossSpec:
    """A loss to retrain: its display name, source text and metadata (``NAME``/``DESCRIPTION``/...)."""

    name: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_candidate(cls, candidate: Any) -> LossSpec:
        """From a library entry (``lossforge.candidates.load_library()[name]``)."""
        metadata = {
            "NAME": candidate.name,
            "DESCRIPTION": candidate.description,
            "ORIGIN": candidate.origin,
            "PARENTS": list(candidate.parents),
        }
        return cls(candidate.name, candidate.source, metadata)


@dataclass(frozen=True)
class RetrainConfig:
    """What to retrain, on what, and how to evaluate it.

    Attributes:
        loss: the candidate; ``baseline``: a second loss trained identically into ``out/baseline``, or None.
        model, dataset: hub ids or local paths (``save_pretrained`` directory or ``.gguf`` file; JSONL/JSON/Parquet
            or ``save_to_disk`` directory, standard or conversational ``prompt/chosen/rejected``). ``model`` is
            recorded as given; what loads is ``Prepared.model_path`` (``model_source.resolve_model``).
        recipe: the resolved recipe (``recipe.load_recipe``).
        num_processes: ranks of the launch (<= visible GPUs; on CPU <= cores).
        accelerate_config: an accelerate config file; None: the recipe's (on GPUs) or plain DDP.
        report_to: ``none``, ``tensorboard``, ``wandb`` or ``trackio``.
        train_split, test_split, test_fraction: the training split; the held-out split, or the share carved
            out of the training split when the dataset has no ``test_split``.
        eval_samples: cap on held-out pairs scored; None: all.
        judge: ``judge`` task options (``questions``, ``judge_model``, ...), or None.
        lm_eval, lm_eval_include, lm_eval_limit: ``--lm-eval`` tasks, extra task YAMLs, examples per task.
        static_policy: re-check the loss with the static policy (off only for tests of the deeper layers).
        timeout_s: wall-clock limit of each launch; None: the recipe's ``default_timeout_s()``.
    """

    loss: LossSpec
    model: str
    dataset: str
    out: Path
    recipe: Recipe
    num_processes: int = 1
    accelerate_config: Path | None = None
    report_to: str = "none"
    train_split: str = "train"
    test_split: str = "test"
    test_fraction: float = 0.1
    eval_samples: int | None = None
    judge: dict[str, Any] | None = None
    lm_eval: str | None = None
    lm_eval_include: Path | None = None
    lm_eval_limit: int | None = None
    baseline: LossSpec | None = None
    static_policy: bool = True
    timeout_s: float | None = None

    @property
    def launch_timeout_s(self) -> float:
        return self.timeout_s if self.timeout_s is not None else self.recipe.default_timeout_s()


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


def _refuse_by_policy(name: str, source: str) -> None:
    """The static policy on the exact text the ranks will execute, just before they are launched."""
    from lossforge.evaluate.checking.policy import check_policy

    errors = check_policy(source).errors
    if errors:
        raise CandidateRejected(f"the checker rejects {name} at stage static: {'; '.join(errors)}")


def retrain(config: RetrainConfig) -> dict[str, Any]:
    """Prepare, train, evaluate (and the baseline likewise); returns the content of ``out/metrics.json``."""
    started = time.perf_counter()
    prepared = prepare(config)
    log.info("checked the inputs and the loss in %.1f s", time.perf_counter() - started)
    warnings = [w for ws in prepared.warnings.values() for w in ws]
    for message in prepared.notes + [f"warning: {w}" for w in warnings]:
        log.info("%s", message)
    result = train_and_evaluate(prepared, config.loss, config.out)
    baseline = None
    if config.baseline is not None:
        baseline = train_and_evaluate(prepared, config.baseline, config.out / BASELINE_DIR)
        write_outputs(prepared, config.baseline, config.out / BASELINE_DIR, baseline, None)
    return write_outputs(prepared, config.loss, config.out, result, baseline)


def train_and_evaluate(prepared: Prepared, loss: LossSpec, out: Path) -> dict[str, Any]:
    """Launch the training of ``loss`` into ``out`` and evaluate what it saved; the partial metrics.json."""
    config, recipe = prepared.config, prepared.recipe
    if config.static_policy:
        _refuse_by_policy(loss.name, loss.source)
    out.mkdir(parents=True, exist_ok=True)
    (out / "loss.py").write_text(loss.source, encoding="utf-8")
    resolved = {**recipe.resolved(config.num_processes), "notes": prepared.notes}
    (out / "recipe.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    entry_args = [
        "--out",
        str(out),
        "--model",
        prepared.model_path,
        "--dataset",
        config.dataset,
        "--train-split",
        config.train_split,
        "--test-split",
        config.test_split,
        "--test-fraction",
        str(config.test_fraction),
        "--report-to",
        config.report_to,
    ]
    plan = plan_launch(
        entry_args,
        num_processes=config.num_processes,
        gpus=prepared.gpus,
        cores=prepared.cores,
        accelerate_config=prepared.accelerate_config,
    )
    log.info("training %s: %s; every rank's output goes to %s", loss.name, plan.description, out / "train.log")
    outcome = run_launch(plan, log_path=out / "train.log", timeout_s=config.launch_timeout_s)
    log.info("the launch of %s took %.1f s", loss.name, outcome.seconds)
    _refuse_failed_launch(loss.name, out, outcome, config)
    checkpoints = out / "checkpoints"  # TRL's output_dir: holds something only if the recipe saves checkpoints
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()
    training = json.loads((out / "train_log.json").read_text(encoding="utf-8"))
    started = time.perf_counter()
    metrics = evaluate_output(prepared, out)
    log.info("evaluated %s in %.1f s", loss.name, time.perf_counter() - started)
    return {"metrics": metrics, "training": training}


def _refuse_failed_launch(name: str, out: Path, outcome: LaunchOutcome, config: RetrainConfig) -> None:
    if outcome.timed_out:
        which = (
            "--timeout" if config.timeout_s is not None else "the recipe's default --timeout; raise it with --timeout"
        )
        raise TrainingTimeout(
            f"the retrain of {name} was killed after {config.launch_timeout_s:g} s ({which}), every training process "
            f"with it; its log is {out / 'train.log'}"
        )
    if outcome.returncode != 0:
        for line in outcome.errors[1:]:
            log.info("train.log also has: %s", line[:MAX_ERROR_CHARS])
        cause = f": {outcome.errors[0][:MAX_ERROR_CHARS]}" if outcome.errors else ""
        raise TrainingFailed(
            f"training {name} failed (exit status {outcome.returncode}){cause}; its log is {out / 'train.log'}"
        )


def evaluate_output(prepared: Prepared, out: Path) -> dict[str, float]:
    """Load the saved model from ``out`` and evaluate it: held-out pairs, then the judge and lm-eval if asked."""
    from lossforge.evaluate.retrain.evaluation import judge_metrics, load_trained, preference_metrics, quiet_libraries

    config, recipe = prepared.config, prepared.recipe
    with quiet_libraries():
        policy, tokenizer = load_trained(out, prepared.model_path, lora=recipe.lora is not None)
    batch_size = int(recipe.training.get("per_device_eval_batch_size", 8))
    metrics = preference_metrics(
        policy,
        tokenizer,
        model=prepared.model_path,
        dataset=config.dataset,
        held_out=prepared.splits.test,
        max_length=int(recipe.training.get("max_length") or 1024),
        batch_size=batch_size,
        eval_samples=config.eval_samples,
    )
    if prepared.judge is not None:
        metrics.update(judge_metrics(prepared.judge, policy, tokenizer, seed=recipe.seed))
    if prepared.lm_eval is not None:
        metrics.update(prepared.lm_eval.run(policy, tokenizer, batch_size=batch_size, seed=recipe.seed))
    return metrics


def write_outputs(
    prepared: Prepared, loss: LossSpec, out: Path, result: dict[str, Any], baseline: dict[str, Any] | None
) -> dict[str, Any]:
    """``out/metrics.json`` and ``out/README.md`` (the model card, replacing the one written on save)."""
    from lossforge.evaluate.retrain.model_card import render

    config, training = prepared.config, dict(result["training"])
    for bulky in ("step_losses", "log_history"):  # kept in train_log.json
        training.pop(bulky, None)
    rank_protections = training.pop("rank_protections", None)
    losses = result["training"].get("step_losses") or []
    metrics = dict(result["metrics"])
    if losses:
        metrics["train/loss"] = sum(losses) / len(losses)
        metrics["train/final_loss"] = losses[-1]
    document = {
        "kind": "retrain",
        "candidate": loss.name,
        "model": config.model,
        "model_identity": model_identity(config.model),  # a GGUF file's SHA-256: which bytes were trained
        "dataset": config.dataset,
        "recipe": prepared.recipe.name,
        "metrics": metrics,
        "baseline": BASELINE_DIR if baseline is not None else None,
        "held_out": prepared.splits.note,
        "held_out_carved": prepared.splits.carved,
        "num_processes": config.num_processes,
        "seed": prepared.recipe.seed,
        "loss": {k: loss.metadata.get(k) for k in ("NAME", "DESCRIPTION", "ORIGIN", "PARENTS")},
        "batch_coupled": bool(prepared.profiles.get(loss.name, {}).get("batch_coupled")),
        "warnings": prepared.warnings.get(loss.name, []),
        "protections": describe_protections(config.static_policy, config.launch_timeout_s, rank_protections),
        "notes": prepared.notes,
        "training": training,
        "versions": {name: importlib.metadata.version(name) for name in _VERSIONED},
    }
    (out / "metrics.json").write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    baseline_document = None
    if baseline is not None:
        baseline_document = json.loads((out / BASELINE_DIR / "metrics.json").read_text(encoding="utf-8"))
    recipe = yaml.safe_load((out / "recipe.yaml").read_text(encoding="utf-8"))
    card = render(document, loss_meta=document["loss"], recipe=recipe, baseline=baseline_document, source=loss.source)
    (out / "README.md").write_text(card, encoding="utf-8")
    return document


__all__ = [
    "BASELINE_DIR",
    "CandidateRejected",
    "LossSpec",
    "Prepared",
    "RetrainConfig",
    "TrainingFailed",
    "TrainingTimeout",
    "prepare",
    "retrain",
]
