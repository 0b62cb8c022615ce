"""Train a candidate loss with LoRA DPO on a task and score it: ``train_candidate(candidate, TrainConfig(...))``.

Two isolated processes per beta, both forked from the fork server, both killed with their children when
``TrainConfig.timeout`` (the run's whole budget) runs out:

- the training process (``lossforge.evaluate.training.worker``) applies the sandbox's runtime protections,
  runs the candidate inside TRL's trainer and writes the trained LoRA adapter, as safetensors, into a scratch
  directory this process creates (and always deletes);
- the scoring process (``lossforge.evaluate.training.scorer``) never imports or runs the candidate: it
  rebuilds the model from the task's reference and this process's LoRA settings, loads the adapter after
  checking every tensor's name and shape, and scores it.

The score is computed where the candidate never ran (DESIGN.md): code in a process can rewrite anything in
that process, so what the training process returns (its status, ``train/*`` metrics, timings) is taken as
its word and nothing more, and never holds the score. ``steps == 0`` scores the untrained reference in the
scoring process alone. Reference log-probs are shared between runs through the on-disk cache
(``lossforge.evaluate.training.reference_cache``), so the betas of one call and every later candidate reuse them.

Source text (``str``) is untrusted: it goes through ``lossforge.evaluate.check`` first and is executed only in
the training process. A ``Candidate`` from the library is trusted and is not re-checked.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from typing import Any

from lossforge.candidates import Candidate
from lossforge.evaluate import isolation
from lossforge.evaluate.cache import cache_root
from lossforge.evaluate.tasks import get_task
from lossforge.evaluate.tasks.base import Task, TaskError
from lossforge.evaluate.training.combine import mean_metrics, summed_timings
from lossforge.evaluate.training.config import ConfigError, TrainConfig
from lossforge.evaluate.training.result import RunResult

# The fork server imports these once, so that each worker starts in milliseconds rather than seconds.
isolation.preload(
    ["transformers", "trl", "peft", "lossforge.evaluate.training.worker", "lossforge.evaluate.training.scorer"]
)

ADAPTER_FILE = "adapter.safetensors"
# What the training process may report besides its status: its ``train/*`` metrics and these timings.
_TRAINING_TIMINGS = ("reference", "training")


def _request(config: TrainConfig, task: Task, source: str, beta: float) -> dict[str, Any]:
    """The JSON-able instruction for one worker run, with every default resolved."""
    cpu_count = os.cpu_count() or 1
    limits = isolation.Limits(
        cpu_seconds=config.timeout * cpu_count + 60,  # wall clock is the real limit; CPU time is a backstop
        memory_bytes=int(config.memory_gb * 1024**3),
        file_size_bytes=0,  # the training process raises it to its adapter's size; nothing else is written
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


def _check_source(source: str, *, static_policy: bool = True) -> RunResult | None:
    """``RunResult("rejected")`` when the checker refuses the source, ``None`` when it passes."""
    from lossforge.evaluate.checking.checker import check

    report = check(source, fmt="python", static_policy=static_policy)
    if report.passed:
        return None
    return RunResult(status="rejected", error="; ".join(report.errors) or f"rejected at stage {report.stage}")


def run_one(request: dict[str, Any], task: Task) -> RunResult:
    """One beta: train in one isolated process, score in another; raises ``TaskError`` on bad task input.

    The training process's status, ``train/*`` metrics and timings are its own report; the score, the task's
    metrics and the evaluation time come from the scoring process only.
    """
    isolation.warm_up()  # starting the fork server (once per process) is no part of this run's time or budget
    start = time.perf_counter()
    if request["steps"] == 0:  # the untrained reference: nothing to train, nothing the candidate touched
        return _score(request, task, None, _training_report({"status": "trained"}), start)
    scratch = tempfile.mkdtemp(prefix="lossforge-adapter-")
    try:
        adapter_path = os.path.join(scratch, ADAPTER_FILE)
        trained = _train(request, adapter_path, start)
        if isinstance(trained, RunResult):
            return trained
        return _score(request, task, adapter_path, trained, start)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train(request: dict[str, Any], adapter_path: str, start: float) -> RunResult | dict[str, Any]:
    """Run the training process; its report (``_training_report``) when it trained, else the run's result."""
    from lossforge.evaluate.training.worker import run_training

    outcome = isolation.run_isolated(run_training, request, adapter_path, timeout=request["limits"]["wall_seconds"])
    tail = outcome.stderr_tail or None
    if outcome.status == "timeout":
        return RunResult(status="timeout", error=outcome.error, stderr_tail=tail, timings={"total": outcome.seconds})
    if outcome.status != "ok":  # crashed, out of memory, or an exception outside the worker's own handling
        error = outcome.error or "the worker returned no error text"
        return RunResult(status="failed", error=f"{outcome.status}: {error}", stderr_tail=tail)
    report = _training_report(outcome.value)
    status, error = report["status"], report["error"]
    if status == "trained":
        return report
    if status == "input_error":
        if not os.path.exists(adapter_path):  # the set-up failed before the candidate ran: the error is real
            raise TaskError(error or "the task's input could not be loaded")
        status, error = "failed", f"the training process reported an input error after its set-up: {error}"
    elif status not in ("diverged", "failed"):
        status, error = "failed", f"the training process ended with status {status!r}: {error}"
    if not error:  # a status without a reason helps nobody: point at the output
        error = f"the worker ended with status {status!r} and no error text; its output: {tail or '(none)'}"
    timings = {**report["timings"], "total": time.perf_counter() - start}
    return RunResult(status=status, metrics=report["metrics"], timings=timings, error=error, stderr_tail=tail)  # type: ignore[arg-type]


def _training_report(value: Any) -> dict[str, Any]:
    """What the training process returned, reduced to what it may report: status, error, train/* metrics, timings.

    That process ran the candidate, which can write anything into its result: every field is type-checked,
    metrics other than ``train/*`` and timings other than its own are dropped, and a score is never read.
    """
    if not isinstance(value, dict):
        value = {"status": "failed", "error": f"the training process returned a {type(value).__name__}, not a record"}
    metrics = value.get("metrics") if isinstance(value.get("metrics"), dict) else {}
    timings = value.get("timings") if isinstance(value.get("timings"), dict) else {}
    error = value.get("error")
    return {
        "status": str(value.get("status")),
        "error": str(error)[:4000] if error else None,
        "metrics": {k: float(v) for k, v in metrics.items() if str(k).startswith("train/") and _is_number(v)},
        "timings": {
            "reference": 0.0,
            "training": 0.0,
            **{k: float(v) for k, v in timings.items() if k in _TRAINING_TIMINGS and _is_seconds(v)},
        },
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_seconds(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and value >= 0


def _score(
    request: dict[str, Any], task: Task, adapter_path: str | None, trained: dict[str, Any], start: float
) -> RunResult:
    """Score the adapter (None: the reference) in a fresh isolated process that never ran the candidate."""
    from lossforge.evaluate.training.scorer import score_adapter

    timings, train_metrics = dict(trained["timings"]), trained["metrics"]

    def result(
        status: str, error: str | None = None, metrics: dict[str, float] | None = None, **fields: Any
    ) -> RunResult:
        timings["total"] = time.perf_counter() - start
        merged = dict(metrics or {})
        for name, value in train_metrics.items():  # the scoring process's own metrics win any clash
            merged.setdefault(name, value)
        return RunResult(status=status, error=error, metrics=merged, timings=timings, **fields)  # type: ignore[arg-type]

    wall = request["limits"]["wall_seconds"]
    remaining = wall - (time.perf_counter() - start)
    if remaining <= 0:
        return result("timeout", f"did not finish within the wall-clock limit of {wall:g} s: no time was left to score")
    outcome = isolation.run_isolated(score_adapter, request, adapter_path, timeout=remaining)
    value = outcome.value if outcome.status == "ok" else {}
    timings["evaluation"] = value.get("evaluation", 0.0)  # the task's scoring alone, as before the separation
    timings["scoring_process"] = outcome.seconds  # that process's whole life, from its fork to its answer
    # What the separation adds: the scoring process's fork, task, model and adapter loading and checks.
    timings["scoring_setup"] = max(0.0, outcome.seconds - timings["evaluation"])
    tail = outcome.stderr_tail or None
    if outcome.status == "timeout":
        return result("timeout", f"scoring {outcome.error}", stderr_tail=tail)
    if outcome.status != "ok":
        error = outcome.error or "it returned no error text"
        return result("failed", f"the scoring process {outcome.status}: {error}", stderr_tail=tail)
    if value["status"] == "input_error":
        raise TaskError(value["error"])
    if value["status"] == "invalid_adapter":
        return result("failed", f"the training process returned no valid adapter: {value['error']}")
    if value["status"] == "diverged":
        return result("diverged", value["error"], value.get("metrics"))
    if value["status"] == "collected":  # the task grades in this (networked) process what the scorer generated
        graded_at = time.perf_counter()
        scored = task.grade(value["collected"], seed=request["seed"])  # type: ignore[attr-defined]
        timings["evaluation"] += time.perf_counter() - graded_at
        return result("ok", metrics=dict(scored.metrics), score=scored.score)
    return result("ok", metrics=value["metrics"], score=value["score"])


def _combine(betas: tuple[float, ...], runs: list[RunResult]) -> RunResult:
    """Several betas -> one result: mean score, mean metrics and summed timings (``combine``), worst score,
    per-beta details; the first non-ok status wins."""
    per_beta = {repr(b): {"score": r.score, "metrics": r.metrics, "status": r.status} for b, r in zip(betas, runs)}
    timings = summed_timings(runs)
    failed = next((r for r in runs if r.status != "ok"), None)
    if failed is not None:
        return replace(failed, timings=timings, per_beta=per_beta)
    scores = [float(r.score) for r in runs if r.score is not None]
    return RunResult(
        status="ok",
        score=sum(scores) / len(scores),
        metrics=mean_metrics(runs),
        timings=timings,
        per_beta=per_beta,
        min_score=min(scores),
    )


def train_candidate(
    candidate: str | Candidate, config: TrainConfig, *, check: bool = True, static_policy: bool = True
) -> RunResult:
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
            rejected = _check_source(source, static_policy=static_policy)
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
