"""The training worker: runs inside the isolated child process, trains one candidate at one beta, scores it.

Life cycle of ``run_training(request)`` (the target ``lossforge.evaluate.training.launcher`` hands to ``run_isolated``):

1. trusted setup: build the task, load the reference model and tokenizer, build ``CandidateDPOTrainer``
   with LoRA (DESIGN.md defaults), load or compute the shared reference log-probs (this writes the cache);
2. ``apply_runtime_protections``: from here on no writable open, socket, fork or exec;
3. compile the candidate source (``contract.compile_loss``) and train;
4. score the trained policy with ``task.score``; a task with ``scores_in_parent`` (the judge, which needs
   the network the worker lacks) instead returns ``task.collect(...)`` for the parent to ``grade``.

Everything the child returns is JSON (``run_isolated`` refuses pickles from a child that ran untrusted code).
Outcomes the candidate causes come back as a status (``diverged``, ``failed``); bad task input (a missing
column, a missing model path) comes back as ``input_error`` so the caller can raise it as a usage error.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from typing import Any

import torch
from lossforge.evaluate.contract import CandidateError, compile_loss
from lossforge.evaluate.isolation import Limits, apply_runtime_protections
from lossforge.evaluate.tasks import get_task
from lossforge.evaluate.tasks.base import Task, TaskError
from lossforge.evaluate.training.candidate_trainer import CandidateDPOTrainer, DivergedError
from lossforge.evaluate.training.reference_cache import attach_reference_logps

# Training-log keys reported as metrics (prefixed ``train/``), averaged over the run's logged steps.
_TRAIN_METRICS = ("rewards/margins", "rewards/accuracies", "rewards/chosen", "logps/chosen", "logps/rejected")


def _not_compiled(*args: Any) -> torch.Tensor:
    raise CandidateError("the candidate was not compiled before training")


def _dpo_config(request: dict[str, Any], task: Task, output_dir: str) -> Any:
    from trl import DPOConfig

    on_cuda = request["device"] == "cuda" or (request["device"] == "auto" and torch.cuda.is_available())
    return DPOConfig(
        output_dir=output_dir,
        max_steps=request["steps"],
        per_device_train_batch_size=request["batch_size"],
        learning_rate=request["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=request["warmup_ratio"],  # a float in [0, 1) is a ratio of the total steps
        beta=request["beta"],
        max_length=task.max_length,
        seed=request["seed"],
        data_seed=request["seed"],
        use_cpu=not on_cuda,
        # CPU: float32, no checkpointing (bf16 autocast and checkpointing make tiny models slower).
        bf16=on_cuda and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,  # workers would fork, which the protections refuse
        dataset_num_proc=None,
    )


def _lora_config(request: dict[str, Any]) -> Any:
    from peft import LoraConfig

    # "all-linear": every attention and MLP projection, never the output head (PEFT's rule).
    return LoraConfig(
        r=request["lora_r"], lora_alpha=request["lora_alpha"], lora_dropout=request["lora_dropout"],
        target_modules="all-linear", task_type="CAUSAL_LM",
    )  # fmt: skip


def _train_metrics(trainer: CandidateDPOTrainer) -> dict[str, float]:
    logs = [row for row in trainer.state.log_history if "loss" in row and "train_runtime" not in row]
    metrics: dict[str, float] = {}
    if trainer.step_losses:
        metrics["train/loss"] = sum(trainer.step_losses) / len(trainer.step_losses)
        metrics["train/final_loss"] = trainer.step_losses[-1]
    for key in _TRAIN_METRICS:
        values = [float(row[key]) for row in logs if key in row]
        if values:
            metrics[f"train/{key.replace('/', '_')}"] = sum(values) / len(values)
    return metrics


def _result(status: str, **fields: Any) -> dict[str, Any]:
    return {"status": status, **fields}


def run_training(request: dict[str, Any]) -> dict[str, Any]:
    """Train and score one candidate at one beta; returns a ``RunResult``-shaped dict (JSON-serialisable)."""
    from transformers import set_seed

    timings = {"reference": 0.0, "training": 0.0, "evaluation": 0.0}
    start = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if request.get("threads"):
        torch.set_num_threads(request["threads"])
    try:
        task = get_task(request["task"], request["options"], cache_dir=request["cache_dir"],
                        eval_samples=request["eval_samples"])  # fmt: skip
        set_seed(request["seed"])
        model, tokenizer = task.reference()
        if request["steps"] > 0:
            trainer = CandidateDPOTrainer(
                model=model, args=_dpo_config(request, task, os.path.join(request["cache_dir"], "trainer-output")),
                train_dataset=task.preference_data(), processing_class=tokenizer,
                peft_config=_lora_config(request), loss_fn=_not_compiled,
            )  # fmt: skip
            t0 = time.perf_counter()
            attach_reference_logps(trainer, task_key=task.cache_key(), cache_dir=request["cache_dir"])
            timings["reference"] = time.perf_counter() - t0
    except TaskError as exc:
        return _result("input_error", error=str(exc))

    isolation = apply_runtime_protections(Limits(**request["limits"]))
    if request["steps"] == 0:
        policy = model  # the untrained reference itself
    else:
        t0 = time.perf_counter()
        try:
            trainer.loss_fn = compile_loss(request["source"])
            trainer.train()
        except DivergedError as exc:
            return _result("diverged", error=str(exc), timings=timings, metrics=_train_metrics(trainer))
        except CandidateError as exc:
            return _result("failed", error=str(exc), timings=timings)
        except Exception as exc:  # noqa: BLE001 - TRL/torch failing on what the candidate returned: its failure
            tail = traceback.format_exc(limit=-3)
            return _result("failed", error=f"{type(exc).__name__}: {exc}\n{tail}", timings=timings)
        finally:
            timings["training"] = time.perf_counter() - t0
        policy = trainer.model

    t0 = time.perf_counter()
    metrics = _train_metrics(trainer) if request["steps"] > 0 else {}
    try:
        if getattr(task, "scores_in_parent", False):
            # A task whose scoring needs the network (the judge): generate here, grade in the parent.
            collected = task.collect(policy, tokenizer, seed=request["seed"])  # type: ignore[attr-defined]
            timings["evaluation"] = time.perf_counter() - t0
            timings["total"] = time.perf_counter() - start
            return _result("collected", collected=collected, metrics=metrics, timings=timings)
        scored = task.score(policy, tokenizer, seed=request["seed"])
    except TaskError as exc:  # the task's own data cannot be scored (e.g. every prompt too long)
        return _result("input_error", error=str(exc))
    timings["evaluation"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start
    metrics = {**{k: float(v) for k, v in scored.metrics.items()}, **metrics}
    if not math.isfinite(scored.score):
        return _result("diverged", error=f"the task score is {scored.score}", metrics=metrics, timings=timings)
    return _result("ok", score=float(scored.score), metrics=metrics, timings=timings, isolation=isolation)


__all__ = ["run_training"]
