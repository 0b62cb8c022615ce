"""`lossforge report RUN`: one self-contained HTML file of the run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from lossforge.discovery.commands.common import RunDir, emit_json, fail
from lossforge.discovery.review import ReviewError


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_command(
        run_dir: RunDir,
        out: Annotated[Path | None, typer.Option(help="HTML file to write (default: RUN/report.html).")] = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print the written report's path as JSON on stdout.")
        ] = False,
    ) -> None:
        """Write one self-contained HTML report of the run (opens from disk, no network)."""
        from lossforge.discovery.review.report import write_report

        try:
            path = write_report(run_dir, out)
        except ReviewError as exc:
            raise fail(str(exc)) from None
        if as_json:
            emit_json({"report": str(path)})
        else:
            typer.echo(f"wrote {path}")


__all__ = ["register"]
