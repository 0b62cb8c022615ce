"""What every subcommand shares: JSON on stdout only, one-line errors on stderr, the exit-code convention."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import typer
import yaml

EXIT_OK, EXIT_UNSUCCESSFUL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command line that cannot be run as given (exit 2); the message says what to change."""


def emit_json(payload: Any) -> None:
    """One JSON document per line on stdout (logs go to stderr)."""
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = EXIT_USAGE, *, json_status: str | None = None) -> typer.Exit:
    """Print ``error: <message>`` on stderr (no traceback) and return the ``typer.Exit`` to raise.

    ``json_status``: also print ``{"status": json_status, "error": message}`` on stdout, for a command whose
    ``--json`` promises one object whatever happens.
    """
    typer.echo(f"error: {message}", err=True)
    if json_status is not None:
        emit_json({"status": json_status, "error": message})
    return typer.Exit(code)


def parse_task_options(values: Sequence[str], task: str) -> dict[str, Any]:
    """``--option KEY=VALUE`` flags (repeatable; VALUE parsed as YAML, so ``0.4`` is a float and ``[a, b]`` a
    list) -> task options. Raises ``UsageError`` for a malformed flag or a key the task does not declare in its
    ``OPTIONS`` (the message lists the ones it has); a task that declares none accepts any key."""
    from lossforge.evaluate.tasks import TaskError, task_class

    options: dict[str, Any] = {}
    for value in values:
        key, equals, text = value.partition("=")
        key = key.strip()
        if not equals or not key:
            raise UsageError(f"--option takes KEY=VALUE, e.g. --option sample_temperature=0.7, got {value!r}")
        try:
            options[key] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise UsageError(f"--option {key}: {text!r} is not a YAML value ({exc.problem or exc})") from None
    try:
        known = task_class(task).OPTIONS
    except TaskError as exc:
        raise UsageError(str(exc)) from None
    unknown = sorted(set(options) - set(known)) if known else []
    if unknown:
        raise UsageError(
            f"task {task!r} has no option {', '.join(map(repr, unknown))}; its options are: {', '.join(known)}"
        )
    return options


__all__ = ["EXIT_OK", "EXIT_UNSUCCESSFUL", "EXIT_USAGE", "UsageError", "emit_json", "fail", "parse_task_options"]
