"""Train a candidate loss with LoRA DPO on a task and score it: ``train_candidate(candidate, TrainConfig(...))``.

One training run per beta, each in a fresh isolated worker process (``lossforge.evaluate.training.worker``) that
applies the sandbox's runtime protections before the candidate's code runs and is killed, with its children,
when it passes ``TrainConfig.timeout``. Reference log-probs are shared between runs through the on-disk cache
(``lossforge.evaluate.training.reference_cache``), so the betas of one call and every later candidate reuse them.

Source text (``str``) is untrusted: it goes through ``lossforge.evaluate.check`` first and is executed only in
the worker. A ``Candidate`` from the library is trusted and is not re-checked.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, replace
from typing import Any

from lossforge.candidates import Candidate
from lossforge.evaluate import isolation
from lossforge.evaluate.cache import cache_root
from lossforge.evaluate.tasks import get_task
from lossforge.evaluate.tasks.base import Task, TaskError
from lossforge.evaluate.training.config import ConfigError, TrainConfig
from lossforge.evaluate.training.result import RunResult

# The fork server imports these once, so that each worker starts in milliseconds rather than seconds.
isolation.preload(["transformers", "trl", "peft", "lossforge.evaluate.training.worker"])


def _request(config: TrainConfig, task: Task, source: str, beta: float) -> dict[str, Any]:
    """The JSON-able instruction for one worker run, with every default resolved."""
    cpu_count = os.cpu_count() or 1
    limits = isolation.Limits(
        cpu_seconds=config.timeout * cpu_count + 60,  # wall clock is the real limit; CPU time is a backstop
        memory_bytes=int(config.memory_gb * 1024**3),
        file_size_bytes=0,  # nothing is written after set-up
        max_processes=1024,  # torch and tokenizers start threads; seccomp is what refuses processes
        wall_seconds=config.timeout,
    )
    return {
        "source": source,
        "task": config.task,
        "options": dict(config.options),
        "cache_dir": str(task.cache_dir),
        "eval_samples": config.eval_samples,
        "beta": beta,
        "steps": task.default_steps if config.steps is None else config.steps,
        "seed": config.seed,
        "learning_rate": config.learning_rate or task.default_learning_rate,
        "batch_size": config.batch_size or task.default_batch_size,
        "lora_r": config.lora_r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "warmup_ratio": config.warmup_ratio,
        "device": config.device,
        "threads": config.threads,
        "limits": asdict(limits),
    }


def _check_source(source: str) -> RunResult | None:
    """``RunResult("rejected")`` when the checker refuses the source, ``None`` when it passes."""
    from lossforge.evaluate.checking.checker import check

    report = check(source, fmt="python")
    if report.passed:
        return None
    return RunResult(status="rejected", error="; ".join(report.errors) or f"rejected at stage {report.stage}")


def run_one(request: dict[str, Any], task: Task) -> RunResult:
    """One isolated worker run; maps the process outcome to a ``RunResult``. Raises ``TaskError`` on bad input."""
    from lossforge.evaluate.training.worker import run_training

    outcome = isolation.run_isolated(run_training, request, timeout=request["limits"]["wall_seconds"])
    tail = outcome.stderr_tail or None
    if outcome.status == "timeout":
        return RunResult(status="timeout", error=outcome.error, stderr_tail=tail, timings={"total": outcome.seconds})
    if outcome.status != "ok":  # crashed, out of memory, or an exception outside the worker's own handling
        error = outcome.error or "the worker returned no error text"
        return RunResult(status="failed", error=f"{outcome.status}: {error}", stderr_tail=tail)
    value = outcome.value
    if value["status"] == "input_error":
        raise TaskError(value["error"])
    if value["status"] == "collected":  # the task grades in this (networked) process what the worker generated
        start = time.perf_counter()
        scored = task.grade(value["collected"], seed=request["seed"])  # type: ignore[attr-defined]
        value["timings"]["evaluation"] += time.perf_counter() - start
        value.update(status="ok", score=scored.score, metrics={**scored.metrics, **value["metrics"]})
    error = value.get("error")
    if value["status"] != "ok" and not error:  # a status without a reason helps nobody: point at the output
        error = f"the worker ended with status {value['status']!r} and no error text; its output: {tail or '(none)'}"
    return RunResult(
        status=value["status"], score=value.get("score"), metrics=value.get("metrics") or {},
        timings=value.get("timings") or {}, error=error, stderr_tail=tail if value["status"] != "ok" else None,
    )  # fmt: skip


def _combine(betas: tuple[float, ...], runs: list[RunResult]) -> RunResult:
    """Several betas -> one result: mean score and metrics, worst score, per-beta details; first non-ok status wins."""
    per_beta = {repr(b): {"score": r.score, "metrics": r.metrics, "status": r.status} for b, r in zip(betas, runs)}
    timings: dict[str, float] = {}
    for run in runs:
        for key, seconds in run.timings.items():
            timings[key] = timings.get(key, 0.0) + seconds
    failed = next((r for r in runs if r.status != "ok"), None)
    if failed is not None:
        return replace(failed, timings=timings, per_beta=per_beta)
    scores = [float(r.score) for r in runs if r.score is not None]
    shared = set.intersection(*(set(r.metrics) for r in runs))
    mean_metrics = {key: sum(r.metrics[key] for r in runs) / len(runs) for key in sorted(shared)}
    return RunResult(
        status="ok", score=sum(scores) / len(scores), metrics=mean_metrics,
        timings=timings, per_beta=per_beta, min_score=min(scores),
    )  # fmt: skip


def train_candidate(candidate: str | Candidate, config: TrainConfig, *, check: bool = True) -> RunResult:
    """Train ``candidate`` on ``config.task`` at each beta and score it; never raises for what the candidate does.

    ``candidate``: contract source text (untrusted: checked first unless ``check=False``, then executed only
    in the worker) or a library ``Candidate`` (trusted). Raises ``TaskError`` for bad task input (unknown
    option, missing model path or dataset column), as no candidate could be scored on it.
    """
    if isinstance(candidate, Candidate):
        source = candidate.source
    else:
        source = candidate
        if check:
            rejected = _check_source(source)
            if rejected is not None:
                return rejected
    cache_dir = config.cache_dir or cache_root()
    task = get_task(config.task, config.options, cache_dir=cache_dir, eval_samples=config.eval_samples)
    betas = config.resolved_betas(task)
    runs: list[RunResult] = []
    for beta in betas:
        runs.append(run_one(_request(config, task, source, beta), task))
        if runs[-1].status != "ok":
            break  # the remaining betas would spend time on a candidate that is already out
    if config.betas is None:
        return runs[0]
    return _combine(betas[: len(runs)], runs)


__all__ = ["ConfigError", "TrainConfig", "train_candidate"]
