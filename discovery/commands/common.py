"""What every subcommand shares: JSON on stdout only, one-line errors on stderr, the exit-code convention."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

EXIT_OK, EXIT_UNSUCCESSFUL, EXIT_USAGE = 0, 1, 2


def emit_json(payload: Any) -> None:
    """One JSON document per line on stdout (logs go to stderr)."""
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def usage_error(message: str) -> typer.Exit:
    """Print one clear line on stderr and return the exit-2 exception to raise (no traceback)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)
