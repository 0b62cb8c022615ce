"""The training process: runs inside an isolated child, trains one candidate at one beta, hands back the adapter.

It never scores. The candidate's code runs in this process, and code in a process can rewrite anything in it
(a loss that patches ``Task.score`` once it sees a gradient would report any score it likes), so what this
process returns is believed only as far as the candidate could not forge it to its advantage: its status
(``trained``, ``diverged``, ``failed``), its ``train/*`` metrics and its timings. The score is computed by a
fresh process that never ran the candidate, from the adapter weights this one writes
(``lossforge.evaluate.training.scorer``; docs/DESIGN.md, "The score is computed where the candidate never ran").

Life cycle of ``run_training(request, adapter_path)`` (the target ``lossforge.evaluate.training.launcher``
hands to ``run_isolated``):

1. trusted set-up: build the task, load the reference model and tokenizer, build ``CandidateDPOTrainer``
   with LoRA (docs/DESIGN.md defaults), load or compute the shared reference log-probs (this writes the cache),
   and create ``adapter_path`` (in a scratch directory the parent made) open for writing;
2. ``apply_runtime_protections``: from here on no writable open, socket, fork or exec (writes to the adapter
   descriptor, already open, stay possible, up to a file-size limit that fits the adapter; the pipes to the
   fork server's services, inherited and not needed, are pointed at ``/dev/null`` first);
3. compile the candidate source (``contract.compile_loss``) and train;
4. write the LoRA tensors (``peft.get_peft_model_state_dict``) as safetensors bytes to the adapter file.

Everything the child returns is JSON (``run_isolated`` refuses pickles from a child that ran untrusted code).
Outcomes the candidate causes come back as a status (``diverged``, ``failed``); bad task input (a missing
column, a missing model path) found during the set-up comes back as ``input_error`` before the adapter file
exists, so the parent can tell it from a claim made after the candidate ran.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import replace
from typing import Any

import torch
from lossforge.evaluate.contract import CandidateError, compile_loss
from lossforge.evaluate.isolation import Limits, apply_runtime_protections
from lossforge.evaluate.tasks.base import Task, TaskError
from lossforge.evaluate.training.candidate_trainer import CandidateDPOTrainer, DivergedError, use_pytorch_kernels
from lossforge.evaluate.training.reference_cache import attach_reference_logps
from lossforge.evaluate.training.scorer import (
    adapter_size_bound,
    lora_config,
    task_and_reference,
    uses_bf16,
    uses_cuda,
)

# Training-log keys reported as metrics (prefixed ``train/``), averaged over the run's logged steps.
_TRAIN_METRICS = ("rewards/margins", "rewards/accuracies", "rewards/chosen", "logps/chosen", "logps/rejected")


def _not_compiled(*args: Any) -> torch.Tensor:
    raise CandidateError("the candidate was not compiled before training")


def _dpo_config(request: dict[str, Any], task: Task, output_dir: str) -> Any:
    from trl import DPOConfig

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
        use_cpu=not uses_cuda(request),
        # CPU: float32, no checkpointing (bf16 autocast and checkpointing make tiny models slower).
        bf16=uses_bf16(request),
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,  # workers would fork, which the protections refuse
        dataset_num_proc=None,
    )


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


def _lora_tensors(trainer: CandidateDPOTrainer) -> dict[str, torch.Tensor]:
    """The LoRA tensors (only those) of the trainer's model, by PEFT's names (the adapter name left out)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(trainer.accelerator.unwrap_model(trainer.model))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _result(status: str, **fields: Any) -> dict[str, Any]:
    return {"status": status, **fields}


def run_training(request: dict[str, Any], adapter_path: str) -> dict[str, Any]:
    """Train one candidate at one beta and write its adapter to ``adapter_path``; returns a JSON-able dict.

    ``adapter_path`` must not exist yet (its directory does: the parent's scratch directory). Statuses:
    ``trained`` (the adapter is written), ``diverged``, ``failed``, ``input_error`` (set-up only).
    """
    from safetensors.torch import save

    if request["steps"] < 1:
        raise ValueError(f"run_training needs steps >= 1, got {request['steps']}; steps=0 is scored without training")
    timings = {"reference": 0.0, "training": 0.0}
    use_pytorch_kernels()  # before the reference log-probs too, so both sides of the margin come from one path
    try:
        task, model, tokenizer = task_and_reference(request)
        trainer = CandidateDPOTrainer(
            model=model,
            args=_dpo_config(request, task, os.path.join(request["cache_dir"], "trainer-output")),
            train_dataset=task.preference_data(),
            processing_class=tokenizer,
            peft_config=lora_config(request),
            loss_fn=_not_compiled,
        )
        t0 = time.perf_counter()
        attach_reference_logps(trainer, task_key=task.cache_key(), cache_dir=request["cache_dir"])
        timings["reference"] = time.perf_counter() - t0
    except TaskError as exc:
        return _result("input_error", error=str(exc))

    # Opened now, while writable opens are allowed; created only here, so an input error never leaves one.
    adapter_fd = os.open(adapter_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    # The adapter is the only file written after the lock-down: RLIMIT_FSIZE fits exactly its size bound.
    limits = replace(Limits(**request["limits"]), file_size_bytes=adapter_size_bound(_lora_tensors(trainer)))
    isolation = apply_runtime_protections(limits)
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

    data = save({name: t.detach().to("cpu").contiguous() for name, t in _lora_tensors(trainer).items()})
    _write_all(adapter_fd, data)
    os.close(adapter_fd)
    return _result(
        "trained", metrics=_train_metrics(trainer), timings=timings, isolation=isolation, adapter_bytes=len(data)
    )


__all__ = ["run_training"]
