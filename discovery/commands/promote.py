"""`lossforge promote RUN ID`: copy a candidate into a loss library, checked again first."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from lossforge.discovery.commands.common import RunDir, emit_json, fail
from lossforge.discovery.review import ReviewError, promote


def register(app: typer.Typer) -> None:
    @app.command("promote")
    def promote_command(
        run_dir: RunDir,
        candidate_id: Annotated[int, typer.Argument(help="The candidate's id.")],
        name: Annotated[str | None, typer.Option(help="Library name (default: the candidate's name).")] = None,
        library: Annotated[
            Path | None,
            typer.Option(
                help=(
                    "Library folder to write to (default: $LOSSFORGE_HOME/candidates; "
                    "e.g. candidates/ of a source checkout)."
                )
            ),
        ] = None,
        force: Annotated[
            bool,
            typer.Option(
                help="Promote a candidate that did not train to 'ok', or replace an existing file of that name."
            ),
        ] = False,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print the promoted file's path and name as JSON on stdout.")
        ] = False,
    ) -> None:
        """Copy a candidate into a loss library (checked again first) so `train`/`run` can use it by name."""
        try:
            path = promote(run_dir, candidate_id, name=name, library=library, force=force)
        except ReviewError as exc:
            raise fail(str(exc)) from None
        if as_json:
            emit_json({"path": str(path), "name": path.stem})
        else:
            typer.echo(f"promoted candidate {candidate_id} to {path}")


__all__ = ["register"]
