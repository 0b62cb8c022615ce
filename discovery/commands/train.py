"""`lossforge train CANDIDATE`: train one candidate with LoRA DPO on a task and score it.

CANDIDATE is a library name (``dpo``, or a loss in the user library) or a ``.py`` file, which is checked
first. Exit codes: 0 status ``ok``; 1 any other status (``rejected``, ``diverged``, ``failed``, ``timeout``;
the result is still printed); 2 usage, configuration or task-input errors, reported as one line on stderr.
With ``--json`` stdout holds exactly one JSON object; every log (TRL, transformers, the workers) goes to
stderr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from lossforge.discovery.commands.common import (
    EXIT_OK,
    EXIT_UNSUCCESSFUL,
    UsageError,
    emit_json,
    fail,
    parse_betas,
    parse_task_options,
    resolve_candidate,
    stdout_to_stderr,
)
from lossforge.evaluate.tasks import DEFAULT_TASK, TASK_NAMES  # a lazy registry: imports no task module
from lossforge.evaluate.training.result import RunResult

if TYPE_CHECKING:
    from lossforge.discovery.scoring.seed_training import SeedsResult


def _summary(result: RunResult | SeedsResult) -> str:
    lines = [f"status: {result.status}"]
    min_score = result.min_score if isinstance(result, RunResult) else None
    if result.score is not None:
        lines.append(
            f"score: {result.score:.4f}" + (f" (min over betas {min_score:.4f})" if min_score is not None else "")
        )
    if result.error:
        lines.append(f"error: {result.error}")
    stats = None if isinstance(result, RunResult) else result.stats
    if stats is not None:
        ci = stats.ci
        lines.append(
            f"seeds {list(stats.seeds)}: scores "
            + ", ".join(f"{x:.4f}" for x in stats.scores)
            + f"; mean {stats.mean:.4f} +- {stats.stderr:.4f}, 95% CI [{ci[0]:.4f}, {ci[1]:.4f}]"  # type: ignore[index]
        )
    for beta, entry in ((result.per_beta if isinstance(result, RunResult) else None) or {}).items():
        score = "-" if entry["score"] is None else f"{entry['score']:.4f}"
        lines.append(f"beta {beta}: {entry['status']} score {score}")
    lines += [f"  {name}: {value:.4g}" for name, value in sorted(result.metrics.items())]
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()))
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        candidate: str = typer.Argument(..., help="A library loss name (e.g. dpo) or a .py candidate file."),
        task: str = typer.Option(DEFAULT_TASK, "--task", help=f"{', '.join(TASK_NAMES)}, or package.module:Class."),
        beta: float | None = typer.Option(None, "--beta", help="Loss beta (default: the task's)."),
        betas: str | None = typer.Option(None, "--betas", help="Score at several betas, e.g. 0.01,0.1,0.5."),
        steps: int | None = typer.Option(None, "--steps", help="Training steps; 0 scores the untrained reference."),
        seed: int = typer.Option(0, "--seed", help="Training and scoring seed."),
        model: str | None = typer.Option(
            None, "--model", help="Task option: model path, .gguf file or hub id (hf, judge, reviews)."
        ),
        dataset: str | None = typer.Option(None, "--dataset", help="Task option: dataset path or hub id (hf)."),
        option: list[str] = typer.Option(
            [], "--option", help="Task option KEY=VALUE (a YAML value), repeatable: --option sample_temperature=0.7."
        ),
        eval_samples: int | None = typer.Option(None, "--eval-samples", help="Held-out samples to score on."),
        timeout: float = typer.Option(3600.0, "--timeout", help="Wall-clock limit of each run (per beta), seconds."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        threads: int | None = typer.Option(None, "--threads", help="Torch CPU threads per run (default: torch's)."),
        seeds: int = typer.Option(1, "--seeds", help="Train on seeds SEED .. SEED+N-1: mean, stderr, 95% CI."),
        json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
        no_static_policy: bool = typer.Option(
            False,
            "--no-static-policy",
            help="Skip the AST screen of a .py candidate, for testing the deeper layers (the sandboxed check, "
            "the training process's lock-down and scoring in a separate process still hold).",
        ),
    ) -> None:
        """Train a candidate with LoRA DPO on a task and score it."""
        from lossforge.discovery.scoring.seed_training import train_candidate_on_seeds
        from lossforge.evaluate.config_error import ConfigError
        from lossforge.evaluate.isolation import interruptible
        from lossforge.evaluate.tasks.base import TaskError
        from lossforge.evaluate.training.config import TrainConfig
        from lossforge.evaluate.training.launcher import train_candidate

        options = {key: value for key, value in (("model", model), ("dataset", dataset)) if value is not None}
        try:
            options.update(parse_task_options(option, task))
            config = TrainConfig(
                task=task,
                options=options,
                beta=beta,
                betas=parse_betas(betas) if betas else None,
                steps=steps,
                seed=seed,
                eval_samples=eval_samples,
                timeout=timeout,
                device=device,
                threads=threads,  # type: ignore[arg-type]
            )
            resolved = resolve_candidate(candidate)
            if seeds < 1:
                raise UsageError(f"--seeds must be >= 1, got {seeds}")
            # Ctrl-C kills the training in progress at once (its worker leads its own session and never sees it).
            with stdout_to_stderr(), interruptible():
                if seeds > 1:
                    result = train_candidate_on_seeds(resolved, config, seeds, static_policy=not no_static_policy)
                else:
                    result = train_candidate(resolved, config, static_policy=not no_static_policy)
        except ConfigError as exc:
            raise fail(exc.one_line()) from None
        except (UsageError, TaskError) as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            message = "interrupted; the training in progress was stopped and nothing was scored"
            raise fail(message, EXIT_UNSUCCESSFUL, json_status="aborted" if json_output else None) from None
        if json_output:
            emit_json(result.to_dict())
        else:
            typer.echo(_summary(result))
        raise typer.Exit(EXIT_OK if result.status == "ok" else EXIT_UNSUCCESSFUL)
