"""`lossforge plot RUN`: the run's figures as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from lossforge.discovery.commands.common import RunDir, emit_json, fail
from lossforge.discovery.review import ReviewError


def register(app: typer.Typer) -> None:
    @app.command("plot")
    def plot_command(
        run_dir: RunDir,
        out: Annotated[Path | None, typer.Option(help="Folder for the PNG files (default: RUN/figures).")] = None,
        top: Annotated[int, typer.Option(min=1, help="Candidates drawn in the loss-curve figure.")] = 5,
        as_json: Annotated[bool, typer.Option("--json", help="Print the written paths as JSON on stdout.")] = False,
    ) -> None:
        """Draw the run's figures as PNG: loss curves vs DPO, scores over generations, reward vs KL, confirmations,
        LLM usage."""
        from lossforge.discovery.review.plot import plot_run  # matplotlib only when drawing

        try:
            paths = plot_run(run_dir, out, top=top)
        except ReviewError as exc:
            raise fail(str(exc)) from None
        if as_json:
            emit_json({"figures": [str(p) for p in paths]})
            return
        for path in paths:
            typer.echo(str(path))


__all__ = ["register"]
