"""`lossforge retrain CANDIDATE --model M --dataset D`: train a candidate at full scale and evaluate it.

CANDIDATE is a library name, a contract-format ``.py`` file, or ``RUN:ID`` (candidate ID of the run in
directory RUN, read from its archive). The library function is
:func:`lossforge.evaluate.retrain.pipeline.retrain`; this module parses flags, builds its
``RetrainConfig`` and reports. Exit codes: 0 trained and evaluated; 1 the checker rejected the loss, the
training failed, ran past ``--timeout`` or was interrupted (every training process is stopped first); 2 bad
input (one line on stderr, nothing launched). ``--json`` prints ``metrics.json``'s content as one object on
stdout (``{"status", "error"}`` when it fails); the ranks' output goes to ``OUT/train.log``, their own
``[rank R/N]`` lines and a progress line now and then to stderr.
"""

from __future__ import annotations

import logging
import re
import sys
import time
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
    resolve_candidate,
    stdout_to_stderr,
)

TIMEOUT_HELP = (
    "Wall-clock limit of each training launch, seconds; past it every training process is killed (exit 1). "
    "Default: 1 h + 5 min per step when the recipe sets max_steps, else 24 h; never more than 24 h."
)
NO_POLICY_HELP = (
    "Skip the static policy (AST screen); for tests of the deeper layers. The sandboxed check, the environment "
    "without secrets and the ranks' lock-down still hold."
)


def default_out(name: str) -> Path:
    """``lossforge-retrain/NAME-TIME``. NAME comes from the candidate (its ``NAME``, or the archive's name), so it
    is reduced to ASCII letters, digits, ``_`` and ``-``: "../" or a newline must not choose the directory."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:60] or "candidate"
    return Path("lossforge-retrain") / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def resolve_loss(spec: str) -> Any:
    """``RUN:ID``, a ``.py`` file or a library name -> a ``LossSpec`` (source text and metadata)."""
    from lossforge.candidates import read_metadata
    from lossforge.evaluate.retrain.config import LossSpec

    run, colon, ident = spec.rpartition(":")
    if colon and run and ident.isdigit() and not spec.endswith(".py"):
        return _from_run(Path(run), int(ident), spec)
    resolved = resolve_candidate(spec)
    if isinstance(resolved, str):  # a .py file: untrusted text, checked before anything runs
        try:
            meta = read_metadata(resolved)
        except SyntaxError as exc:
            raise UsageError(f"{spec}: not valid Python ({exc.msg}, line {exc.lineno})") from None
        name = str(meta.get("NAME") or Path(spec).stem)
        return LossSpec(name, resolved, {k: meta.get(k) for k in ("NAME", "DESCRIPTION", "ORIGIN", "PARENTS")})
    return LossSpec.from_candidate(resolved)


def _from_run(run: Path, cid: int, spec: str) -> Any:
    from lossforge.candidates import read_metadata
    from lossforge.discovery.storage.archive import Archive
    from lossforge.evaluate.retrain.config import LossSpec

    if not (run / "archive.sqlite").is_file():
        raise UsageError(f"{spec}: {run} is not a run directory (no archive.sqlite)")
    with Archive.open(run) as archive:
        row = archive.get(cid)
        path = archive.code_path(cid)
    if row is None:
        raise UsageError(f"{spec}: run {run} has no candidate {cid}")
    if not row.code:
        raise UsageError(f"{spec}: candidate {cid} of {run} has no code (status {row.status})")
    # The archive's contract-format file carries the metadata (NAME, ORIGIN, PARENTS); the row's code otherwise.
    source = path.read_text(encoding="utf-8") if path is not None else row.code
    try:
        meta = read_metadata(source)
    except SyntaxError:
        meta = {}
    metadata = {
        "NAME": row.name,
        "DESCRIPTION": row.thought or meta.get("DESCRIPTION"),
        "ORIGIN": meta.get("ORIGIN") or row.origin or row.proposer,
        "PARENTS": [str(p) for p in row.parents],
    }
    return LossSpec(row.name or f"candidate_{cid}", source, metadata)


def _judge_options(questions: Path | None, model: str | None, base_url: str | None, extra: list[str]) -> Any:
    if questions is None:
        if model or base_url or extra:
            raise UsageError("--judge-model, --judge-base-url and --judge-option need --judge QUESTIONS.jsonl")
        return None
    options = parse_task_options(extra, "judge")
    options["questions"] = str(questions)
    if model:
        options["judge_model"] = model
    if base_url:
        options["judge_base_url"] = base_url
    if not options.get("judge_model"):
        raise UsageError("--judge needs --judge-model (the judge model's name at the endpoint)")
    return options


def _summary(document: dict[str, Any], out: Path) -> str:
    lines = [f"retrained {document['candidate']} on {document['model']}: {out}", document["held_out"]]
    lines += [f"  {name}: {value:.4g}" for name, value in sorted(document["metrics"].items())]
    if document["baseline"]:
        lines.append(f"baseline: {out / document['baseline']} (lossforge compare {out} {out / document['baseline']})")
    lines += [f"warning: {w}" for w in document.get("warnings", [])]
    protections = document.get("protections") or {}
    rank = protections.get("rank") or {}
    lines.append(
        f"protections: static policy {protections.get('static_policy')}, environment without secrets, "
        f"whole launch stopped on exit/timeout ({protections.get('timeout_s', 0):g} s); in each rank: "
        + ", ".join(f"{name} {state}" for name, state in rank.items())
    )
    return "\n".join(lines)


def _status(exc: Exception) -> str:
    """The ``--json`` status of a retrain that did not succeed (DESIGN.md's candidate statuses)."""
    from lossforge.evaluate.retrain.errors import CandidateRejected, TrainingTimeout

    if isinstance(exc, CandidateRejected):
        return "rejected"
    return "timeout" if isinstance(exc, TrainingTimeout) else "failed"


def _logging() -> None:
    logger = logging.getLogger("lossforge.retrain")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("lossforge retrain: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def register(app: typer.Typer) -> None:
    @app.command("retrain")
    def retrain_command(
        candidate: str = typer.Argument(..., help="A library name, a contract-format .py file, or RUN:ID."),
        model: str | None = typer.Option(
            None, "--model", help="Base model: hub id, save_pretrained directory or .gguf file."
        ),
        dataset: str | None = typer.Option(None, "--dataset", help="Preference pairs: hub id, file or directory."),
        recipe: str = typer.Option("lora", "--recipe", help="lora, full, or a recipe YAML file."),
        overrides: list[str] = typer.Option([], "--set", help="Override a recipe field: KEY=VALUE (YAML; lora.r=8)."),
        accelerate_config: Path | None = typer.Option(None, "--accelerate-config", help="An accelerate config file."),
        num_processes: int = typer.Option(1, "--num-processes", help="Processes (GPUs; CPU cores without GPUs)."),
        out: Path | None = typer.Option(None, "--out", help="Output directory (default lossforge-retrain/NAME-TIME)."),
        report_to: str = typer.Option("none", "--report-to", help="none, tensorboard, wandb or trackio."),
        train_split: str = typer.Option("train", "--train-split", help="Training split."),
        test_split: str = typer.Option("test", "--test-split", help="Held-out split (carved out when missing)."),
        test_fraction: float = typer.Option(
            0.1, "--test-fraction", help="Share carved out when there is no test split."
        ),
        eval_samples: int | None = typer.Option(None, "--eval-samples", help="Cap on held-out pairs scored."),
        judge: Path | None = typer.Option(None, "--judge", help="MT-Bench-style question file (JSONL) to grade."),
        judge_model: str | None = typer.Option(None, "--judge-model", help="Judge model name at the endpoint."),
        judge_base_url: str | None = typer.Option(None, "--judge-base-url", help="OpenAI-compatible endpoint."),
        judge_option: list[str] = typer.Option([], "--judge-option", help="Other judge task options, KEY=VALUE."),
        lm_eval: str | None = typer.Option(None, "--lm-eval", help="lm-eval tasks (name[:shots],...) or openllm-v1."),
        lm_eval_include: Path | None = typer.Option(None, "--lm-eval-include", help="Directory of lm-eval task YAMLs."),
        lm_eval_limit: int | None = typer.Option(
            None, "--lm-eval-limit", help="Examples per lm-eval task (a smoke run)."
        ),
        baseline: str | None = typer.Option(
            None, "--baseline", help="A library loss retrained alike into OUT/baseline."
        ),
        timeout: float | None = typer.Option(None, "--timeout", min=1.0, help=TIMEOUT_HELP),
        no_static_policy: bool = typer.Option(False, "--no-static-policy", help=NO_POLICY_HELP),
        json_output: bool = typer.Option(False, "--json", help="Print metrics.json's content on stdout."),
    ) -> None:
        """Retrain a candidate at full scale under accelerate launch, and evaluate it."""
        from lossforge.evaluate.config_error import ConfigError
        from lossforge.evaluate.retrain.config import RetrainConfig
        from lossforge.evaluate.retrain.errors import CandidateRejected, TrainingFailed
        from lossforge.evaluate.retrain.pipeline import retrain
        from lossforge.evaluate.retrain.recipe import load_recipe
        from lossforge.evaluate.tasks.base import TaskError

        _logging()
        try:
            if not model or not dataset:
                raise UsageError(f"{'--model' if not model else '--dataset'} is required")
            loss = resolve_loss(candidate)
            baseline_loss = resolve_loss(baseline) if baseline else None
            config = RetrainConfig(
                loss=loss,
                model=model,
                dataset=dataset,
                recipe=load_recipe(recipe, overrides),
                out=out or default_out(loss.name),
                num_processes=num_processes,
                accelerate_config=accelerate_config,
                report_to=report_to,
                train_split=train_split,
                test_split=test_split,
                test_fraction=test_fraction,
                eval_samples=eval_samples,
                judge=_judge_options(judge, judge_model, judge_base_url, judge_option),
                lm_eval=lm_eval,
                lm_eval_include=lm_eval_include,
                lm_eval_limit=lm_eval_limit,
                baseline=baseline_loss,
                static_policy=not no_static_policy,
                timeout_s=timeout,
            )
            with stdout_to_stderr():
                document = retrain(config)
        except ConfigError as exc:
            raise fail(exc.one_line()) from None
        except (UsageError, TaskError) as exc:
            raise fail(str(exc)) from None
        except (CandidateRejected, TrainingFailed) as exc:
            status = _status(exc)
            raise fail(str(exc), EXIT_UNSUCCESSFUL, json_status=status if json_output else None) from None
        except KeyboardInterrupt:
            message = "interrupted; every training process was stopped and nothing was evaluated"
            raise fail(message, EXIT_UNSUCCESSFUL, json_status="aborted" if json_output else None) from None
        if json_output:
            emit_json(document)
        else:
            typer.echo(_summary(document, config.out))
        raise typer.Exit(EXIT_OK)
