"""`lossforge confirm RUN`: retrain a run's winners, its baseline and its best library loss on held-out seeds.

Parse flags -> the run's stored config -> ``confirm.plan_from_config`` -> ``confirm.confirm`` under the run's
lock -> print one result per candidate x task x beta. Finished trainings are kept in the archive, so a killed
confirmation continues where it stopped. Exit codes: 0 done; 1 nothing could be confirmed (every training
failed); 2 bad input (unknown run, unknown id, unknown task, bad beta, a live run holding the directory), one
line on stderr. With ``--json`` stdout holds one JSON object per result, one per line.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import typer
from lossforge.discovery.commands.common import (
    EXIT_OK,
    EXIT_UNSUCCESSFUL,
    UsageError,
    emit_json,
    fail,
    parse_task_options,
)


def _ids(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--ids takes comma-separated candidate ids such as 7,12, got {text!r}") from None


def _betas(text: str | None) -> tuple[float, ...]:
    from lossforge.discovery.commands.common import parse_betas

    betas = parse_betas(text) if text else ()
    bad = [b for b in betas if not b > 0]
    if bad:
        raise UsageError(f"--betas: every beta must be > 0, got {', '.join(repr(b) for b in bad)}")
    return betas


def _tasks(given: list[str]) -> tuple[str, ...]:
    from lossforge.evaluate.tasks import TaskError, task_class

    for task in given:
        try:
            task_class(task)
        except TaskError as exc:
            raise UsageError(f"--task: {exc}") from None
    return tuple(given)


def _line(entry: dict[str, Any]) -> str:
    from lossforge.discovery.stats.statistics import signed

    def interval(ci: list[float] | None) -> str:
        return f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-"

    mean = "-" if entry["mean"] is None else f"{entry['mean']:.4f}"
    paired = entry.get("paired")
    versus = (
        ""
        if not paired
        else (f"  vs {paired['baseline']} {signed(paired['mean'])} {interval(paired['ci'])} {paired['verdict']}")
    )
    failures = f"  ({len(entry['failures'])} failed)" if entry["failures"] else ""
    return (
        f"#{entry['candidate_id']:<4} {entry['name'][:24]:<24} {entry['role']:<12} {entry['task'][:16]:<16} "
        f"beta {entry['beta']:<6g} mean {mean} {interval(entry['ci'])}{versus}{failures}"
    )


def register(app: typer.Typer) -> None:
    @app.command("confirm")
    def confirm_command(
        run_dir: Path = typer.Argument(..., help="The run directory (its archive.sqlite)."),
        top: int | None = typer.Option(
            None, "--top", help="How many of the best candidates (default search.confirm.top_k, else 3)."
        ),
        ids: str | None = typer.Option(None, "--ids", help="Confirm exactly these candidate ids, e.g. 7,12."),
        seeds: int | None = typer.Option(None, "--seeds", help="Held-out seeds (default search.confirm.seeds)."),
        task: list[str] = typer.Option([], "--task", help="Task to confirm on (repeatable; default: the run's task)."),
        betas: str | None = typer.Option(None, "--betas", help="Betas to confirm at, e.g. 0.01,0.1,1,5."),
        option: list[str] = typer.Option([], "--option", help="KEY=VALUE option of a --task other than the run's."),
        json_output: bool = typer.Option(False, "--json", help="One JSON object per result, one per line."),
    ) -> None:
        """Retrain the winners and the baselines on held-out seeds; paired differences to the baseline."""
        from lossforge.discovery.loop_error import LoopError
        from lossforge.discovery.resume import stored_config
        from lossforge.discovery.scoring.confirm import ConfirmError, plan_from_config
        from lossforge.discovery.storage.archive import Archive
        from lossforge.discovery.storage.run_lock import holding_run

        if not (run_dir / "archive.sqlite").is_file():
            raise fail(f"{run_dir}: no run there (no archive.sqlite)")
        try:
            config = stored_config(run_dir)
            if top is not None and top < 0:
                raise UsageError(f"--top must be >= 0, got {top}")
            if seeds is not None and seeds < 2:
                raise UsageError(f"--seeds must be >= 2 (one seed has no confidence interval), got {seeds}")
            tasks = _tasks(task)
            others = [t for t in tasks if t not in config.training.run_tasks]
            if option and not others:
                raise UsageError("--option sets options of a --task other than the run's; give that --task")
            options = parse_task_options(option, others[0]) if option else {}
            chosen_betas, chosen_ids = _betas(betas), _ids(ids)
        except (UsageError, LoopError) as exc:
            raise fail(str(exc)) from None
        try:
            with holding_run(run_dir, fail), Archive.open(run_dir) as archive:
                default_top = config.search.confirm.top_k or 3
                plan = plan_from_config(
                    config,
                    archive,
                    top_k=default_top if top is None else top,
                    ids=chosen_ids,
                    seeds=seeds,
                    tasks=tasks or None,
                    betas=chosen_betas or None,
                    options=options,
                )
                report = _run(archive, plan, config.execution)
        except (ConfirmError, ValueError) as exc:  # ValueError: TaskError and ConfigError of a task's options
            raise fail(str(exc)) from None
        for entry in report["results"]:
            if json_output:
                emit_json(entry)
            else:
                typer.echo(_line(entry))
        typer.echo(report["sentence"], err=json_output)
        confirmed = any(entry["scores"] for entry in report["results"])
        raise typer.Exit(EXIT_OK if confirmed else EXIT_UNSUCCESSFUL)


def _run(archive: Any, plan: Any, execution: Any) -> dict[str, Any]:
    from lossforge.discovery.commands.common import stdout_to_stderr
    from lossforge.discovery.executors import make_executor
    from lossforge.discovery.progress import confirm_line
    from lossforge.discovery.scoring.confirm import confirm, plan_size
    from lossforge.evaluate.training.launcher import train_candidate

    total = plan_size(plan)

    def progress(done: dict[str, Any]) -> None:
        typer.echo(confirm_line(done), err=True)

    typer.echo(
        f"confirm: {total} trainings ({len(plan.targets)} candidates x {len(plan.tasks)} task(s) x "
        f"{len(plan.betas)} beta(s) x {len(plan.seeds)} held-out seeds); finished ones are kept",
        err=True,
    )
    executor = make_executor(
        "local",
        execution.workers,
        workers_per_gpu=execution.workers_per_gpu,
        gpu_memory_per_worker_gb=execution.gpu_memory_per_worker_gb,
    )
    try:
        with stdout_to_stderr():
            return confirm(
                archive,
                plan,
                executor=executor,
                train=functools.partial(train_candidate, check=False),
                on_done=progress,
            )
    finally:
        executor.shutdown()
