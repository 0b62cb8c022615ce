"""`lossforge leaderboard`, `lossforge show` and `lossforge promote`: review a run and keep its winner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from lossforge.discovery.commands.common import emit_json, fail
from lossforge.discovery.review import ReviewError, leaderboard, promote, show
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

RunDir = Annotated[Path, typer.Argument(help="A run directory (the --out of `lossforge run`).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]


def _format_score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def register(app: typer.Typer) -> None:
    @app.command("leaderboard")
    def leaderboard_command(
        run_dir: RunDir,
        top: Annotated[int | None, typer.Option(min=1, help="Show only the best N.")] = None,
        include_all: Annotated[bool, typer.Option("--all", help="Also list rejected, duplicate and failed proposals.")] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Rank a run's candidates by score."""
        try:
            entries = leaderboard(run_dir, top=top, include_all=include_all)
        except ReviewError as exc:
            raise fail(str(exc)) from None
        if as_json:
            for entry in entries:
                emit_json(entry)
            return
        table = Table(title=f"lossforge leaderboard: {run_dir}")
        for column in ("rank", "id", "name", "gen", "status", "score", "metrics / reason"):
            table.add_column(column)
        for e in entries:
            detail = ", ".join(f"{k}={v:.3g}" for k, v in e["metrics"].items() if isinstance(v, int | float))
            table.add_row(
                str(e["rank"] or ""), str(e["id"]), e["name"] or "", str(e["generation"]), e["status"],
                _format_score(e["score"]), detail or (e["reason"] or "")[:80],
            )  # fmt: skip
        Console().print(table)

    @app.command("show")
    def show_command(
        run_dir: RunDir,
        candidate_id: Annotated[int, typer.Argument(help="The candidate's id (see `lossforge leaderboard`).")],
        as_json: JsonFlag = False,
    ) -> None:
        """Show one candidate: code, thought, status, metrics, profile notes, lineage."""
        try:
            row = show(run_dir, candidate_id)
        except ReviewError as exc:
            raise fail(str(exc)) from None
        if as_json:
            emit_json(row)
            return
        console = Console()
        console.print(f"[bold]#{row['id']} {row['name'] or ''}[/bold]  status={row['status']}  "
                      f"score={_format_score(row['score'])}  generation={row['generation']}  parents={row['parents']}")
        if row["reason"]:
            console.print(f"reason: {row['reason']}")
        if row["thought"]:
            console.print(f"thought: {row['thought']}")
        for key, value in (row["metrics"] or {}).items():
            console.print(f"  {key}: {value}")
        for note in (row["profile"] or {}).get("notes", []):
            console.print(f"  profile: {note}")
        if row["code"]:
            console.print(Syntax(row["code"], "python", line_numbers=False))

    @app.command("promote")
    def promote_command(
        run_dir: RunDir,
        candidate_id: Annotated[int, typer.Argument(help="The candidate's id.")],
        name: Annotated[str | None, typer.Option(help="Library name (default: the candidate's name).")] = None,
        force: Annotated[bool, typer.Option(help="Promote even if the candidate did not train to status 'ok'.")] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Copy a candidate into the user library ($LOSSFORGE_HOME/candidates) so `train`/`run` can use it by name."""
        try:
            path = promote(run_dir, candidate_id, name=name, force=force)
        except ReviewError as exc:
            raise fail(str(exc)) from None
        if as_json:
            emit_json({"path": str(path), "name": path.stem})
        else:
            typer.echo(f"promoted candidate {candidate_id} to {path}")
