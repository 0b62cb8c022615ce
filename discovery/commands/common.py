"""What every subcommand shares: JSON on stdout only (stdout_to_stderr keeps it clean), one-line errors on stderr,
the exit-code convention, and the arguments several commands take (a candidate, betas, task options, a run)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

EXIT_OK, EXIT_UNSUCCESSFUL, EXIT_USAGE = 0, 1, 2
RunDir = Annotated[Path, typer.Argument(help="A run directory (the --out of `lossforge run`).")]
TABLE_WIDTH = 100  # a review table fits a normal terminal unless more columns are asked for


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


def table_console(fit: bool) -> Console:
    """A console ``TABLE_WIDTH`` wide (or the terminal's width, if narrower) when ``fit``; else wide enough
    for any table, so that ``--metrics all`` never wraps."""
    console = Console()
    if not fit:
        return Console(width=max(console.width, 1000)) if not console.is_terminal else console
    return Console(width=min(console.width, TABLE_WIDTH) if console.is_terminal else TABLE_WIDTH)


def parse_betas(text: str) -> tuple[float, ...]:
    """``"0.01,0.1,0.5"`` -> ``(0.01, 0.1, 0.5)``; the range check is ``TrainConfig``'s."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--betas takes comma-separated numbers such as 0.01,0.1,0.5, got {text!r}") from None


def resolve_candidate(spec: str) -> Any:
    """A ``.py`` path -> its source text (untrusted, checked before training); a name -> the library entry."""
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"{spec}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{spec}: cannot be read ({exc})") from None
    from lossforge.candidates import load_library

    library = load_library()
    if spec not in library:
        raise UsageError(f"unknown candidate {spec!r}: not a .py file nor a library name ({', '.join(library)})")
    return library[spec]


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout, by Python or by C code and child processes, to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


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


__all__ = [
    "EXIT_OK",
    "EXIT_UNSUCCESSFUL",
    "EXIT_USAGE",
    "TABLE_WIDTH",
    "RunDir",
    "UsageError",
    "emit_json",
    "fail",
    "parse_betas",
    "parse_task_options",
    "resolve_candidate",
    "stdout_to_stderr",
    "table_console",
]
