"""What every subcommand shares: JSON on stdout only, one-line errors on stderr, the exit-code convention."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

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


__all__ = ["EXIT_OK", "EXIT_UNSUCCESSFUL", "EXIT_USAGE", "UsageError", "emit_json", "fail"]
