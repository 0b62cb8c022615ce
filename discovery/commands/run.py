"""`lossforge run`: parse flags -> build the config -> ``run_discovery`` -> print the summary.

Exit codes: 0 the run finished (also when an LLM budget ended it), 1 aborted (interrupted, or an unexpected
error; the archive is intact and ``--resume`` continues it), 2 usage, config or input error (one message,
no traceback). With ``--json`` stdout holds exactly one JSON object; progress always goes to stderr.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
from lossforge.discovery.commands.common import EXIT_USAGE, UsageError, emit_json, fail, parse_task_options
from lossforge.discovery.config import RunConfig, build_config, default_out, load_config, read_config
from lossforge.evaluate.config_error import ConfigError
from lossforge.evaluate.tasks import TASK_NAMES  # a lazy registry: imports no task module

# Flags that may accompany --resume: they change how the run executes, not what it proposes.
_RESUME_FLAGS = ("generations", "workers", "workers_per_gpu", "executor")
# Task options with flags of their own on `run` (`--option KEY=VALUE` sets any).
TASK_OPTION_FLAGS = {"model": "--task-model", "dataset": "--dataset"}
CONFIRM_TOP_HELP = (
    "Winners retrained on held-out seeds at the end (search.confirm.top_k; default 3). It costs up to (top + 2) x "
    "--confirm-seeds trainings: 25 at the defaults, more than the 16 of a default search (4 seeds + 3 x 4 "
    "proposals); 0 turns it off (`lossforge confirm RUN` does it later)."
)
HELP = """Discover new preference-optimization losses: seeds, then generations of proposals.

The proposer is the offline evolutionary search (default) or an LLM (--proposer openai --llm-model M
[--base-url URL]); the task is what every candidate is trained and scored on.

\b
  lossforge run --generations 3 --population 4 --out lossforge-runs/a
  lossforge run --proposer openai --llm-model Qwen/Qwen2.5-7B-Instruct --base-url http://localhost:8000/v1
  lossforge run --task hf --task-model ./my-model --dataset prefs.jsonl --out lossforge-runs/mine
"""


def _emit(as_json: bool, payload: dict[str, Any]) -> None:
    if as_json:
        emit_json(payload)


def _fail(code: int, message: str, as_json: bool) -> typer.Exit:
    return fail(message, code, json_status=("error" if code == EXIT_USAGE else "aborted") if as_json else None)


def resolve_config(config_file: Path | None, resume: Path | None, flags: dict[str, Any]) -> tuple[RunConfig, Path]:
    """The run's config and directory from the flags; raises ``ConfigError`` (or ``UsageError``) for bad input."""
    if resume is not None:
        config = _resumed(resume, config_file, flags)
        check_task(config, hint=False)  # a resumed run's options are its own: no flag can add one
        return config, resume
    overrides = {
        "proposer.kind": flags.get("proposer"),
        "proposer.base_url": flags.get("base_url"),
        "search.generations": flags.get("generations"),
        "search.population": flags.get("population"),
        "training.task": flags.get("task"),
        "training.tasks": _listed(flags.get("tasks")),
        "training.suite": flags.get("suite"),
        "search.aggregate": flags.get("aggregate"),
        "training.steps": flags.get("steps"),
        "training.eval_samples": flags.get("eval_samples"),
        "execution.workers": flags.get("workers"),
        "execution.workers_per_gpu": flags.get("workers_per_gpu"),
        "execution.executor": flags.get("executor"),
        "seed": flags.get("seed"),
        "out": None if flags.get("out") is None else str(flags["out"]),
        "training.seeds": flags.get("seeds"),
        "search.confirm.top_k": flags.get("confirm_top"),
        "search.confirm.seeds": flags.get("confirm_seeds"),
    }
    # The proposer and the task as the file and the flags give them, before validation: the flags that depend
    # on them (--model, --llm-model, --task-model, --dataset) are judged in their own terms first.
    data = read_config(config_file, overrides)
    proposer, training = data.get("proposer") or {}, data.get("training") or {}
    kind = proposer.get("kind", "evolve") if isinstance(proposer, dict) else None
    task = training.get("task", "sentiment") if isinstance(training, dict) else None
    overrides["proposer.model"] = _llm_model(kind, task, flags)
    given_model = overrides["proposer.model"] or (proposer.get("model") if isinstance(proposer, dict) else None)
    if kind == "openai" and not given_model and not (isinstance(proposer, dict) and proposer.get("models")):
        raise UsageError("the openai proposer needs the LLM's model name: --llm-model M (proposer.model)")
    config = load_config(config_file, overrides)
    if len(config.training.run_tasks) >= 2 and any(flags.get(f) for f in ("option", "task_model", "dataset")):
        raise UsageError(
            "--option, --task-model and --dataset set one task's options; with several tasks set "
            "training.task_options per task in a --config file, e.g. {noisy_labels: {flip_rate: 0.2}}"
        )
    options = _task_options(config.training.task, flags)
    if options:
        overrides["training.task_options"] = {**config.training.task_options, **options}
        config = load_config(config_file, overrides)
    check_task(config)
    return config, Path(config.out or default_out())


def _resumed(resume: Path, config_file: Path | None, flags: dict[str, Any]) -> RunConfig:
    from lossforge.discovery.loop_error import LoopError
    from lossforge.discovery.resume import stored_config

    extra = sorted(k for k, v in flags.items() if v is not None and k not in _RESUME_FLAGS)
    if config_file is not None:
        extra.insert(0, "config")
    if extra:
        allowed = ", ".join(f"--{k.replace('_', '-')}" for k in _RESUME_FLAGS)
        given = ", ".join(f"--{k.replace('_', '-')}" for k in extra)
        raise ConfigError([f"{given} cannot change a run being resumed; with --resume only {allowed} may be given"])
    try:
        stored = stored_config(resume)
    except LoopError as exc:
        raise ConfigError([str(exc)]) from None
    data = stored.resolved()
    if flags.get("generations") is not None:
        data["search"]["generations"] = flags["generations"]
    if flags.get("workers") is not None:
        data["execution"]["workers"] = flags["workers"]
    if flags.get("workers_per_gpu") is not None:
        data["execution"]["workers_per_gpu"] = flags["workers_per_gpu"]
    if flags.get("executor") is not None:
        data["execution"]["executor"] = flags["executor"]
    data["out"] = str(resume)
    return build_config(data, source=f"{resume} (resumed)")


def _llm_model(kind: str | None, task: str | None, flags: dict[str, Any]) -> str | None:
    """The proposer's model: ``--llm-model``, or ``--model`` where it cannot be mistaken for the task's model."""
    llm_model, model = flags.get("llm_model"), flags.get("model")
    if model is not None and llm_model is not None:
        raise UsageError("--model and --llm-model both name the proposer's LLM; give --llm-model only")
    if model is not None and task is not None and _takes_option(task, "model"):
        raise UsageError(
            f"--model is ambiguous with task {task!r}, which trains a model of its own: give that model as "
            f"--task-model {model}, and the proposer's LLM, if any, as --llm-model"
        )
    chosen = llm_model if llm_model is not None else model
    if chosen is not None and kind == "evolve":
        flag = "--llm-model" if llm_model is not None else "--model"
        raise UsageError(
            f"{flag} names the proposer's LLM, and the evolve proposer uses none: drop it, or add --proposer openai"
        )
    return chosen


def _takes_option(task: str, key: str) -> bool:
    from lossforge.evaluate.tasks import TaskError, task_class

    try:
        return key in task_class(task).OPTIONS
    except TaskError:
        return False


def _listed(text: str | None) -> list[str] | None:
    """``--tasks a,b`` as the list ``training.tasks`` takes; None when not given."""
    return None if text is None else [item.strip() for item in text.split(",") if item.strip()]


def _task_options(task: str, flags: dict[str, Any]) -> dict[str, Any]:
    """``--option KEY=VALUE``, ``--task-model`` and ``--dataset``, checked against the task the config names."""
    from lossforge.evaluate.tasks import task_class

    options = parse_task_options(flags["option"], task) if flags.get("option") else {}
    for key, flag in TASK_OPTION_FLAGS.items():
        value = flags.get(flag.removeprefix("--").replace("-", "_"))
        if value is None:
            continue
        if key in options:
            raise UsageError(f"{flag} and --option {key}=... both set the task's option {key!r}; give it once")
        known = task_class(task).OPTIONS
        if known and key not in known:
            raise UsageError(
                f"{flag} sets the task's option {key!r}, and task {task!r} has no option {key!r} (its options: "
                f"{', '.join(known)}); a discovery on your own model and data is --task hf"
            )
        options[key] = str(value)
    return options


def check_task(config: RunConfig, *, hint: bool = True) -> None:
    """Build the run's task from its options, so that a missing or invalid option fails before anything is
    created; with ``hint``, a missing option's message names the flag that gives it."""
    from lossforge.evaluate.tasks import TaskError, get_task

    training = config.training
    try:
        for task in training.run_tasks:
            get_task(task, training.options_for(task), eval_samples=training.eval_samples)
    except TaskError as exc:
        message = str(exc)
        missing = re.search(r"needs option '([^']+)'", message) if hint else None
        if missing:
            key = missing.group(1)
            message += f"; give it with {TASK_OPTION_FLAGS.get(key, f'--option {key}=VALUE')}"
        raise UsageError(message) from None


def register(app: typer.Typer) -> None:
    @app.command(help=HELP)
    def run(
        config: Path | None = typer.Option(None, "--config", help="YAML run config; flags override it."),
        proposer: str | None = typer.Option(None, "--proposer", help="evolve (default, offline) or openai."),
        llm_model: str | None = typer.Option(
            None, "--llm-model", help="The proposer's LLM (proposer.model; required with --proposer openai)."
        ),
        model: str | None = typer.Option(
            None,
            "--model",
            help=(
                "Same as --llm-model, where it cannot be read as the task's model: refused with --task hf or judge "
                "(use --task-model) and with the evolve proposer."
            ),
        ),
        base_url: str | None = typer.Option(
            None, "--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:11434/v1."
        ),
        generations: int | None = typer.Option(None, "--generations", help="Generations after generation 0 (seeds)."),
        population: int | None = typer.Option(None, "--population", help="Proposals per generation."),
        task: str | None = typer.Option(
            None,
            "--task",
            help=(f"Task every candidate is trained and scored on ({', '.join(TASK_NAMES)} or package.module:Class)."),
        ),
        tasks: str | None = typer.Option(
            None,
            "--tasks",
            help=(
                "Several tasks, comma-separated (training.tasks): every candidate trains on each; its score is "
                "the --aggregate of its per-task scores normalized by the baseline's gain over the reference."
            ),
        ),
        suite: str | None = typer.Option(
            None,
            "--suite",
            help=(
                "A built-in task suite (training.suite): 'default' searches on sentiment, noisy_labels and "
                "off_policy and confirms on the held-out length_bias, overoptimization and arithmetic."
            ),
        ),
        aggregate: str | None = typer.Option(
            None,
            "--aggregate",
            help="With several tasks: mean (default) or min, the worst task (search.aggregate).",
        ),
        task_model: str | None = typer.Option(
            None,
            "--task-model",
            help=(
                "The task's model (option model of --task hf/judge/reviews): hub id, save_pretrained directory or "
                ".gguf file."
            ),
        ),
        dataset: str | None = typer.Option(
            None,
            "--dataset",
            help=(
                "The task's preference data (option dataset of --task hf/judge): hub id, .jsonl/.json/.parquet "
                "file or save_to_disk directory."
            ),
        ),
        option: list[str] | None = typer.Option(None, "--option", help="Task option KEY=VALUE (YAML), repeatable."),
        steps: int | None = typer.Option(
            None, "--steps", help="Training steps per candidate (training.steps; default: the task's)."
        ),
        eval_samples: int | None = typer.Option(
            None,
            "--eval-samples",
            help="Held-out samples each score uses (training.eval_samples; default: the task's).",
        ),
        out: Path | None = typer.Option(None, "--out", help="Run directory (default ./lossforge-runs/<timestamp>)."),
        resume: Path | None = typer.Option(None, "--resume", help="Continue the run in this directory."),
        workers: int | None = typer.Option(
            None,
            "--workers",
            help="Concurrent trainings on CPU (execution.workers; default 1); with GPUs see --workers-per-gpu.",
        ),
        workers_per_gpu: int | None = typer.Option(
            None,
            "--workers-per-gpu",
            help=(
                "Concurrent trainings on each visible GPU, as many as fit in its free memory "
                "(execution.workers_per_gpu, gpu_memory_per_worker_gb; default 1)."
            ),
        ),
        executor: str | None = typer.Option(None, "--executor", help="local or ray."),
        seed: int | None = typer.Option(None, "--seed", help="Run seed; each proposal's seed derives from it."),
        seeds: int | None = typer.Option(
            None, "--seeds", help="Training seeds per candidate (training.seeds; default 1)."
        ),
        confirm_top: int | None = typer.Option(None, "--confirm-top", help=CONFIRM_TOP_HELP),
        confirm_seeds: int | None = typer.Option(
            None, "--confirm-seeds", help="Held-out seeds of that confirmation (search.confirm.seeds; default 5)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print a final summary object on stdout."),
    ) -> None:
        from lossforge.discovery.loop import LoopError, run_discovery
        from lossforge.discovery.review.report import GenerationReports
        from lossforge.evaluate.isolation import interruptible

        flags = {
            "proposer": proposer,
            "llm_model": llm_model,
            "model": model,
            "base_url": base_url,
            "generations": generations,
            "population": population,
            "task": task,
            "tasks": tasks,
            "suite": suite,
            "aggregate": aggregate,
            "task_model": task_model,
            "dataset": dataset,
            "option": option or None,
            "steps": steps,
            "eval_samples": eval_samples,
            "out": out,
            "workers": workers,
            "workers_per_gpu": workers_per_gpu,
            "executor": executor,
            "seed": seed,
            "seeds": seeds,
            "confirm_top": confirm_top,
            "confirm_seeds": confirm_seeds,
        }
        try:
            run_config, run_dir = resolve_config(config, resume, flags)
        except ConfigError as exc:
            raise _fail(2, exc.one_line() if len(exc.problems) == 1 else str(exc), as_json) from None
        except UsageError as exc:
            raise _fail(2, str(exc), as_json) from None
        try:
            with interruptible():  # Ctrl-C kills the trainings in progress instead of waiting for them
                # RUN/report.html is rewritten after every generation and once more when the run has finished.
                summary = run_discovery(
                    run_config,
                    run_dir,
                    resume=resume is not None,
                    progress=True,
                    on_generation_end=GenerationReports(),
                )
        except LoopError as exc:
            raise _fail(2, str(exc), as_json) from None
        except KeyboardInterrupt:
            raise _fail(1, f"interrupted; the archive is intact: lossforge run --resume {run_dir}", as_json) from None
        except Exception as exc:  # noqa: BLE001 - the user gets one line and how to continue
            raise _fail(
                1, f"run aborted ({type(exc).__name__}: {exc}); lossforge run --resume {run_dir}", as_json
            ) from None
        data = summary.to_dict()
        data.pop("config", None)  # stored in the run's archive; the summary stays readable
        _emit(as_json, data)
        if not as_json:
            best = summary.best
            shown = "no candidate scored"
            if best:
                shown = f"best: #{best['id']} {best['name']} {best['score']:.4g} ({best['path']})"
            status = f"{summary.status} ({summary.stop_reason})" if summary.stop_reason else summary.status
            typer.echo(f"{status}: {summary.generations} generation(s) in {run_dir}; {shown}", err=True)
            if summary.confirmation:  # the last line, said once: what the held-out seeds confirmed
                typer.echo(summary.confirmation["sentence"], err=True)


def main() -> None:
    """``python -m lossforge.discovery.commands.run``: the command on its own (tests, scripts)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    app()


if __name__ == "__main__":
    main()
