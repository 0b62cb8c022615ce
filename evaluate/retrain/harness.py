"""lm-eval (EleutherAI's LM Evaluation Harness) on a retrained model, through its Python API.

``--lm-eval TASKS``: comma-separated task names, each optionally ``name:shots`` (``hellaswag:10``), or
``openllm-v1``, the Open LLM Leaderboard v1 set with its shot counts (``OPENLLM_V1``). Task definitions
from a directory of lm-eval YAML files (``include``) are found beside lm-eval's own. lm-eval is an
optional extra (``pip install "lossforge[lm-eval]"``); the plan is built -- and every task name resolved --
before training, so a missing package or an unknown task fails first.

Each task runs through ``lm_eval.simple_evaluate`` on the already-loaded policy (``HFLM(pretrained=model)``)
with its own shot count; metrics come back as ``lm_eval/<task>/<metric>`` (lm-eval's ``acc,none`` is
``acc``; standard errors are kept as ``..._stderr``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossforge.evaluate.config_error import ConfigError

# Open LLM Leaderboard v1: task -> few-shot examples.
OPENLLM_V1: dict[str, int] = {
    "arc_challenge": 25,
    "hellaswag": 10,
    "mmlu": 5,
    "truthfulqa_mc2": 0,
    "winogrande": 5,
    "gsm8k": 5,
}
SUITES: dict[str, dict[str, int]] = {"openllm-v1": OPENLLM_V1}


def parse_tasks(text: str) -> dict[str, int | None]:
    """``"openllm-v1"`` / ``"arc_easy:5,piqa"`` -> ``{task: shots}`` (None: the task's own default)."""
    tasks: dict[str, int | None] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part in SUITES:
            tasks.update(SUITES[part])
            continue
        name, colon, shots = part.partition(":")
        if colon and not shots.strip().isdigit():
            raise ConfigError([f"--lm-eval takes TASK or TASK:SHOTS (shots a whole number), got {part!r}"])
        tasks[name.strip()] = int(shots) if colon else None
    if not tasks:
        raise ConfigError([f"--lm-eval names no task, got {text!r}; e.g. openllm-v1 or arc_easy:5,piqa"])
    return tasks


@dataclass
class LmEvalPlan:
    """Tasks to run and the lm-eval ``TaskManager`` that resolved them."""

    tasks: dict[str, int | None]
    include: Path | None = None
    limit: int | None = None
    task_manager: Any = field(default=None, repr=False)

    @classmethod
    def build(cls, text: str, *, include: Path | None = None, limit: int | None = None) -> LmEvalPlan:
        if importlib.util.find_spec("lm_eval") is None:
            raise ConfigError(['--lm-eval needs lm-eval, which is not installed (pip install "lossforge[lm-eval]")'])
        if include is not None and not include.is_dir():
            raise ConfigError([f"--lm-eval-include {include}: not a directory of lm-eval task YAML files"])
        tasks = parse_tasks(text)
        plan = cls(tasks, include, limit)
        plan.task_manager = plan._task_manager()
        return plan

    def _task_manager(self) -> Any:
        from lm_eval.tasks import TaskManager

        if self.include is not None:
            # lm-eval's own index takes seconds to build; skip it when the local tasks are all that is asked.
            local = TaskManager(include_path=str(self.include), include_defaults=False)
            if all(task in local.all_tasks for task in self.tasks):
                return local
        manager = TaskManager(include_path=str(self.include) if self.include else None)
        unknown = [task for task in self.tasks if task not in manager.all_tasks]
        if unknown:
            raise ConfigError([f"unknown lm-eval task(s): {', '.join(unknown)} (lm-eval --tasks list names them)"])
        return manager

    def run(self, policy: Any, tokenizer: Any, *, batch_size: int, seed: int) -> dict[str, float]:
        """Run every task on ``policy``; ``{"lm_eval/<task>/<metric>": value}``."""
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        model = HFLM(pretrained=policy, tokenizer=tokenizer, batch_size=batch_size)
        metrics: dict[str, float] = {}
        for task, shots in self.tasks.items():
            results = lm_eval.simple_evaluate(
                model=model,
                tasks=[task],
                num_fewshot=shots,
                task_manager=self.task_manager,
                limit=self.limit,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
                log_samples=False,
                bootstrap_iters=0,
            )
            for name, values in (results or {}).get("results", {}).items():
                metrics.update(_flatten(name, values))
        return metrics


def _flatten(task: str, values: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        metric, comma, _filter = key.partition(",")
        # Metrics are "name,filter" keys; "alias" and "sample_len" are bookkeeping.
        if not comma or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[f"lm_eval/{task}/{metric}" + (f"_{_filter}" if _filter not in ("", "none") else "")] = float(value)
    return out


__all__ = ["OPENLLM_V1", "SUITES", "LmEvalPlan", "parse_tasks"]
