"""``retrain(config)``: train a candidate at full scale under ``accelerate launch``, evaluate it, write the output.

Life of a retrain:

1. ``prepare`` (:mod:`~lossforge.evaluate.retrain.preparation`) -- everything that can be wrong is found before
   any process starts: the machine, the recipe, the model, the dataset, the judge and lm-eval, and the candidate
   itself, re-checked by ``lossforge.evaluate.check`` (static policy and sandbox).
2. ``train_and_evaluate`` -- ``OUT/loss.py`` and ``OUT/recipe.yaml`` are written, the entry point
   (:mod:`lossforge.evaluate.retrain.entry`) runs on every rank, and the parent loads the saved output
   back and evaluates it (:mod:`~lossforge.evaluate.retrain.evaluation`, :mod:`~lossforge.evaluate.retrain.harness`).
3. With a baseline (``dpo``, say), the same recipe, seed and data order train it into ``OUT/baseline/``.
4. ``metrics.json`` (the shape ``lossforge compare`` reads) and ``README.md`` (the model card) close it.

Errors: bad input raises ``ConfigError`` or ``TaskError`` before anything is launched; a candidate the
checker rejects raises ``CandidateRejected``; a launch that fails raises ``TrainingFailed``, one killed after
its timeout ``TrainingTimeout`` (:mod:`~lossforge.evaluate.retrain.errors`). What to retrain is a
``RetrainConfig`` (:mod:`~lossforge.evaluate.retrain.config`).

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
import time
from pathlib import Path
from typing import Any

import yaml
from lossforge.evaluate.model_source import model_identity
from lossforge.evaluate.retrain.config import LossSpec, RetrainConfig
from lossforge.evaluate.retrain.errors import CandidateRejected, TrainingFailed, TrainingTimeout
from lossforge.evaluate.retrain.launcher import LaunchOutcome, describe_protections, plan_launch, run_launch
from lossforge.evaluate.retrain.preparation import Prepared, prepare

log = logging.getLogger("lossforge.retrain")
BASELINE_DIR = "baseline"
MAX_ERROR_CHARS = 400
_VERSIONED = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


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


__all__ = ["BASELINE_DIR", "retrain"]
