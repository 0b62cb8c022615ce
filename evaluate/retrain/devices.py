"""What the machine offers a retrain, and what a launch may ask of it -- decided before anything starts.

- ``cpu_cores()``: the cores a launch can spread its processes over when no GPU is visible
  (``lossforge.evaluate.gpus.visible_gpus()`` names the GPUs);
- ``process_count_problem(n)``: a process per GPU at most, and on CPU a process per core at most;
- ``choose_optimizer(name, on_cuda)``: the paged and 8-bit optimizers are bitsandbytes' and need CUDA; on
  a machine without both, plain AdamW (``adamw_torch``) trains instead, and the log says so;
- ``tracker_problem(report_to)``: a ``--report-to`` tracker that is not installed.
"""

from __future__ import annotations

import importlib.util
import os

REPORT_TO: dict[str, str] = {"none": "", "tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
FALLBACK_OPTIMIZER = "adamw_torch"


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def process_count_problem(num_processes: int, *, gpus: int, cores: int) -> str | None:
    """Why ``num_processes`` ranks cannot run here, or None."""
    if num_processes < 1:
        return f"--num-processes must be >= 1, got {num_processes}"
    if gpus and num_processes > gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        return f"--num-processes {num_processes} is more than the {gpus} visible GPU(s){where}; one process per GPU"
    if not gpus and num_processes > cores:
        return (
            f"--num-processes {num_processes} is more than the {cores} CPU core(s) available and no GPU is visible; "
            "CPU DDP runs one process per core at most"
        )
    return None


def needs_bitsandbytes(optimizer: str) -> bool:
    name = optimizer.lower()
    return name.startswith(("paged_", "bnb")) or "8bit" in name


def choose_optimizer(optimizer: str, *, on_cuda: bool) -> tuple[str, str]:
    """``(optimizer to train with, a sentence for the log saying which and why)``."""
    if not needs_bitsandbytes(optimizer):
        return optimizer, f"optimizer: {optimizer}"
    missing = [
        what
        for what, present in (("CUDA", on_cuda), ("bitsandbytes", importlib.util.find_spec("bitsandbytes") is not None))
        if not present
    ]
    if not missing:
        return optimizer, f"optimizer: {optimizer} (bitsandbytes)"
    return FALLBACK_OPTIMIZER, (
        f"optimizer: {FALLBACK_OPTIMIZER} (plain AdamW) instead of the recipe's {optimizer}, which needs "
        f"CUDA and bitsandbytes; missing here: {', '.join(missing)}"
    )


def default_precision(training: dict[str, object], *, on_cuda: bool) -> tuple[dict[str, object], str]:
    """The recipe's precision, or -- where it sets neither ``bf16`` nor ``fp16`` -- bf16 on GPUs that support it
    and float32 on CPU (bf16 autocast makes small models slower on CPU; docs/DESIGN.md "Training and fitness")."""
    if "bf16" in training or "fp16" in training:
        precision = "bf16" if training.get("bf16") else "fp16" if training.get("fp16") else "fp32"
        return {}, f"precision: {precision} (the recipe's)"
    import torch

    bf16 = on_cuda and torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": False}, f"precision: {'bf16 (the GPU supports it)' if bf16 else 'fp32'}"


def tracker_problem(report_to: str) -> str | None:
    """Why ``report_to`` cannot be used here, or None."""
    if report_to not in REPORT_TO:
        return f"--report-to must be one of {', '.join(REPORT_TO)}, got {report_to!r}"
    module = REPORT_TO[report_to]
    if module and importlib.util.find_spec(module) is None:
        return f"--report-to {report_to} needs the {module} package, which is not installed (pip install {module})"
    return None


__all__ = [
    "FALLBACK_OPTIMIZER",
    "REPORT_TO",
    "choose_optimizer",
    "cpu_cores",
    "default_precision",
    "needs_bitsandbytes",
    "process_count_problem",
    "tracker_problem",
]
