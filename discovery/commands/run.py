"""`lossforge run`: parse flags -> build the config -> ``run_discovery`` -> print the summary.

Exit codes: 0 the run finished (also when an LLM budget ended it), 1 aborted (interrupted, or an unexpected
error; the archive is intact and ``--resume`` continues it), 2 usage, config or input error (one message,
no traceback). With ``--json`` stdout holds exactly one JSON object; progress always goes to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from lossforge.discovery.commands.common import EXIT_USAGE, UsageError, emit_json, fail, parse_task_options
from lossforge.discovery.config import RunConfig, build_config, default_out, load_config
from lossforge.evaluate.config_error import ConfigError

# Flags that may accompany --resume: they change how the run executes, not what it proposes.
_RESUME_FLAGS = ("generations", "workers", "executor")


def _emit(as_json: bool, payload: dict[str, Any]) -> None:
    if as_json:
        emit_json(payload)


def _fail(code: int, message: str, as_json: bool) -> typer.Exit:
    return fail(message, code, json_status=("error" if code == EXIT_USAGE else "aborted") if as_json else None)


def resolve_config(config_file: Path | None, resume: Path | None, flags: dict[str, Any]) -> tuple[RunConfig, Path]:
    """The run's config and directory from the flags; raises ``ConfigError`` for bad input."""
    if resume is not None:
        from lossforge.discovery.loop_error import LoopError
        from lossforge.discovery.resume import stored_config

        extra = sorted(k for k, v in flags.items() if v is not None and k not in _RESUME_FLAGS)
        if config_file is not None:
            extra.insert(0, "config")
        if extra:
            allowed = ", ".join(f"--{k}" for k in _RESUME_FLAGS)
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
        if flags.get("executor") is not None:
            data["execution"]["executor"] = flags["executor"]
        data["out"] = str(resume)
        return build_config(data, source=f"{resume} (resumed)"), resume
    overrides = {
        "proposer.kind": flags.get("proposer"), "proposer.model": flags.get("model"),
        "proposer.base_url": flags.get("base_url"), "search.generations": flags.get("generations"),
        "search.population": flags.get("population"), "training.task": flags.get("task"),
        "execution.workers": flags.get("workers"), "execution.executor": flags.get("executor"),
        "seed": flags.get("seed"), "out": None if flags.get("out") is None else str(flags["out"]),
        "training.seeds": flags.get("seeds"), "search.confirm.top_k": flags.get("confirm_top"),
        "search.confirm.seeds": flags.get("confirm_seeds"),
    }  # fmt: skip
    config = load_config(config_file, overrides)
    if flags.get("option"):  # validated against the task the config names, flag or file
        try:
            parsed = parse_task_options(flags["option"], config.training.task)
        except UsageError as exc:
            raise ConfigError([str(exc)]) from None
        overrides["training.task_options"] = {**config.training.task_options, **parsed}
        config = load_config(config_file, overrides)
    out = config.out or default_out()
    return config, Path(out)


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        config: Path | None = typer.Option(None, "--config", help="YAML run config; flags override it."),
        proposer: str | None = typer.Option(None, "--proposer", help="evolve (default, offline) or openai."),
        model: str | None = typer.Option(None, "--model", help="LLM model name (required with --proposer openai)."),
        base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:11434/v1."),
        generations: int | None = typer.Option(None, "--generations", help="Generations after generation 0 (seeds)."),
        population: int | None = typer.Option(None, "--population", help="Proposals per generation."),
        task: str | None = typer.Option(None, "--task", help="Task every candidate is trained and scored on."),
        out: Path | None = typer.Option(None, "--out", help="Run directory (default ./lossforge-runs/<timestamp>)."),
        resume: Path | None = typer.Option(None, "--resume", help="Continue the run in this directory."),
        workers: int | None = typer.Option(None, "--workers", help="Concurrent trainings (one per GPU if any)."),
        executor: str | None = typer.Option(None, "--executor", help="local or ray."),
        seed: int | None = typer.Option(None, "--seed", help="Run seed; each proposal's seed derives from it."),
        seeds: int | None = typer.Option(None, "--seeds", help="Training seeds per candidate (training.seeds; default 1)."),
        confirm_top: int | None = typer.Option(None, "--confirm-top", help="Winners retrained on held-out seeds at the end (search.confirm.top_k; default 3, 0: off)."),
        confirm_seeds: int | None = typer.Option(None, "--confirm-seeds", help="Held-out seeds of that confirmation (search.confirm.seeds; default 5)."),
        option: list[str] | None = typer.Option(None, "--option", help="Task option KEY=VALUE (YAML), repeatable."),
        as_json: bool = typer.Option(False, "--json", help="Print a final summary object on stdout."),
    ) -> None:  # fmt: skip
        """Discover new preference-optimization losses: seeds, then generations of proposals."""
        from lossforge.discovery.loop import LoopError, run_discovery
        from lossforge.evaluate.isolation import interruptible

        flags = {
            "proposer": proposer, "model": model, "base_url": base_url, "generations": generations,
            "population": population, "task": task, "out": out, "workers": workers, "executor": executor,
            "seed": seed, "option": option or None, "seeds": seeds, "confirm_top": confirm_top,
            "confirm_seeds": confirm_seeds,
        }  # fmt: skip
        try:
            run_config, run_dir = resolve_config(config, resume, flags)
        except ConfigError as exc:
            raise _fail(2, str(exc), as_json) from None
        try:
            with interruptible():  # Ctrl-C kills the trainings in progress instead of waiting for them
                summary = run_discovery(run_config, run_dir, resume=resume is not None, progress=True)
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
            shown = f"best: {best['name']} {best['score']:.4g} ({best['path']})" if best else "no candidate scored"
            status = f"{summary.status} ({summary.stop_reason})" if summary.stop_reason else summary.status
            typer.echo(f"{status}: {summary.generations} generation(s) in {run_dir}; {shown}", err=True)
            if summary.confirmation:  # the last line: what held-out seeds confirmed, or that nothing beat the baseline
                typer.echo(summary.confirmation["sentence"], err=True)


def main() -> None:
    """``python -m lossforge.discovery.commands.run``: the command on its own (tests, scripts)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    app()


if __name__ == "__main__":
    main()
