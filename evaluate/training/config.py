"""``TrainConfig``: how one candidate is trained and scored (the configuration beside the launcher)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lossforge.evaluate.config_error import ConfigError
from lossforge.evaluate.tasks import TASK_NAMES, task_name_problem
from lossforge.evaluate.tasks.base import Task

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train and score one candidate. Unset fields (``None``) take the task's defaults.

    Attributes:
        task: a registered task name (see ``TASK_NAMES``) or ``"package.module:Class"`` for a custom Task.
        options: task options, e.g. ``{"model": ..., "dataset": ...}`` for ``hf``.
        beta: the loss's beta; ``None``: the task's ``default_beta``.
        betas: several betas scored in one call (score = mean, ``min_score`` = worst); overrides ``beta``.
        steps: optimizer steps; ``0`` scores the untrained reference; ``None``: the task's ``default_steps``.
        seed: training and scoring seed (same seed, same result).
        eval_samples: held-out samples the task scores on; ``None``: the task's default.
        learning_rate, batch_size: ``None``: the task's defaults.
        lora_r, lora_alpha, lora_dropout: LoRA on all attention and MLP projections (docs/DESIGN.md defaults).
        warmup_ratio: share of the steps spent in linear warm-up before the cosine decay.
        timeout: wall-clock seconds of one run (one beta), set-up and scoring included.
        memory_gb: address space a run may add after its set-up (``RLIMIT_AS`` headroom).
        threads: torch CPU threads of a run; ``None``: torch's default. Set it when several runs share the
            CPU: oversubscribed OpenMP threads spin-wait and can make a run many times slower.
        device: ``auto`` uses CUDA (bf16 where supported) when available, else CPU in float32.
        cache_dir: ``$LOSSFORGE_CACHE`` when ``None``.
    """

    task: str = "sentiment"
    options: dict[str, Any] = field(default_factory=dict)
    beta: float | None = None
    betas: tuple[float, ...] | None = None
    steps: int | None = None
    seed: int = 0
    eval_samples: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    warmup_ratio: float = 0.1
    timeout: float = 3600.0
    memory_gb: float = 48.0
    threads: int | None = None
    device: Device = "auto"
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.betas is not None:
            object.__setattr__(self, "betas", tuple(self.betas))
        errors = self._errors()
        if errors:
            raise ConfigError(errors)

    def _errors(self) -> list[str]:
        errors: list[str] = []
        if task_name_problem(self.task) is not None:
            errors.append(f"unknown task {self.task!r}; known: {', '.join(TASK_NAMES)} (or 'package.module:Class')")
        for name in ("beta", "learning_rate", "timeout", "memory_gb"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                errors.append(f"{name} must be > 0, got {value!r}")
        if self.betas is not None:
            if not self.betas:
                errors.append("betas must list at least one beta, got ()")
            bad = [b for b in self.betas if not b > 0]
            if bad:
                errors.append(f"every beta must be > 0, got {', '.join(repr(b) for b in bad)}")
            if len(set(self.betas)) != len(self.betas):
                errors.append(f"betas must be distinct, got {self.betas!r}")
        for name in ("batch_size", "eval_samples", "lora_r", "lora_alpha", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                errors.append(f"{name} must be >= 1, got {value!r}")
        if self.steps is not None and self.steps < 0:
            errors.append(f"steps must be >= 0 (0 scores the untrained reference), got {self.steps!r}")
        for name in ("lora_dropout", "warmup_ratio"):
            if not 0 <= getattr(self, name) < 1:
                errors.append(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            errors.append(f"device must be one of auto, cpu, cuda, got {self.device!r}")
        return errors

    def resolved_betas(self, task: Task) -> tuple[float, ...]:
        if self.betas is not None:
            return self.betas
        return (self.beta if self.beta is not None else task.default_beta,)


__all__ = ["ConfigError", "Device", "TrainConfig"]
