"""`lossforge runs [DIR]`: the runs under a directory, one row each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from lossforge.discovery.commands.common import emit_json, fail, table_console
from lossforge.discovery.review import ReviewError
from lossforge.discovery.review.runs import DEFAULT_RUNS_DIR, FAILED_STATUSES, list_runs
from lossforge.discovery.review.summary import json_payload, number
from rich import box
from rich.markup import escape
from rich.table import Table


def _proposer(run: dict[str, Any]) -> str:
    return f"{run['proposer']}:{run['model']}" if run.get("model") else str(run.get("proposer") or "-")


def _counts(run: dict[str, Any]) -> str:
    """ok / rejected / duplicate / failed (failed, diverged and timed-out trainings together)."""
    counts = run["counts"]
    failed = sum(counts.get(status, 0) for status in FAILED_STATUSES)
    text = f"{counts['ok']}/{counts['rejected']}/{counts['duplicate']}/{failed}"
    return text + (f"\n+{counts['pending']} pending" if counts.get("pending") else "")


def _best(run: dict[str, Any]) -> str:
    best, confirmed = run["best"], run["confirmation"]
    text = f"{number(best['score'])} #{best['id']}" if best else "-"
    if best and best.get("verdict"):
        text += f" ({best['verdict']})"
    if confirmed:
        text += f"; confirmed: {confirmed['winner'] or 'none'}" + (
            f" {confirmed['verdict']}" if confirmed["verdict"] else ""
        )
    return text


def _state(run: dict[str, Any]) -> str:
    return f"{run['state']}\n(budget)" if run["stop_reason"] and run["state"] == "finished" else run["state"]


# Only the columns of free text fold; the others never wrap. Nothing sets a minimum width: rich narrows the folding
# columns to fit the width and would then cut the last column to honour a minimum (the start time, at 100 columns).
# Second lines (pending rows, a budget's stop) keep the never-wrapping columns narrow.
_COLUMNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("run", {"overflow": "fold"}),
    ("task", {"max_width": 12, "overflow": "fold"}),
    ("proposer", {"overflow": "fold"}),
    ("gens", {"justify": "right", "no_wrap": True}),
    ("ok/rej/dup/fail", {"justify": "right", "no_wrap": True}),
    ("best", {"overflow": "fold"}),
    ("cost $", {"justify": "right", "no_wrap": True}),
    ("state", {"no_wrap": True}),
    ("started", {"no_wrap": True}),
)


def _started(run: dict[str, Any]) -> str:
    """``12-04 13:05`` (UTC) from ``2026-12-04T13:05:09Z``."""
    return (run["started"] or "").replace("T", " ")[5:16] or "-"


def runs_table(directory: Path, runs: list[dict[str, Any]]) -> Table:
    table = Table(
        title=f"runs in {directory}",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
        title_justify="left",
    )
    for column, options in _COLUMNS:
        table.add_column(column, **options)
    for run in runs:
        name = Path(run["run_dir"]).name
        if "error" in run:
            table.add_row(escape(name), "", "", "", "", escape(run["error"]), "", "unreadable", "")
            continue
        cells = [
            name,
            run["task"] or "-",
            _proposer(run),
            f"{run['generations_done']}/{run['generations_asked']}",
            _counts(run),
            _best(run),
            f"{run['llm']['cost_usd']:.4f}",
            _state(run),
            _started(run),
        ]
        table.add_row(*(escape(str(cell)) for cell in cells))
    return table


def register(app: typer.Typer) -> None:
    @app.command("runs")
    def runs_command(
        directory: Annotated[
            Path, typer.Argument(help="Folder holding run directories (or one run).")
        ] = DEFAULT_RUNS_DIR,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per run on stdout.")] = False,
    ) -> None:
        """List the runs under a directory: task, proposer, progress, counts, best score, cost, state."""
        try:
            runs = list_runs(directory)
        except ReviewError as exc:
            raise fail(str(exc)) from None
        if as_json:
            for run in runs:
                emit_json(json_payload(run))
            return
        if not runs:
            typer.echo(f"no runs in {directory}", err=True)
            return
        table_console(fit=True).print(runs_table(directory, runs))


__all__ = ["register", "runs_table"]
