"""`lossforge leaderboard RUN`: a run's candidates ranked by score, or its niche grid or per-model table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from lossforge.discovery.commands.common import RunDir, emit_json, fail, table_console
from lossforge.discovery.review import ReviewError, read_leaderboard
from lossforge.discovery.review.leaderboard import Leaderboard
from lossforge.discovery.review.summary import json_payload, number, score_text, verdict_of
from rich import box
from rich.markup import escape
from rich.table import Table

REASON_CHARS = 60
# Rows a human table shows without --top (ranked and unranked each): a screenful, and rich lays out a table of
# hundreds of rows in about a second; --top N shows more, --json everything.
TABLE_ROWS = 50
_VERDICT_MARK = {"better": "better", "worse": "worse", "inconclusive": "~"}


def _more(hidden: int) -> str:
    return f"{hidden} more not shown: --top N shows more, --json all" if hidden > 0 else ""


def leaderboard_table(board: Leaderboard, limit: int | None = None) -> Table:
    """The ranked (trained) entries (the first ``limit``): score or mean ±CI, verdict, metrics, profile tags."""
    ranked = [e for e in board.entries if e["rank"] is not None]
    hidden = len(ranked) - limit if limit is not None else 0
    ranked = ranked[:limit]
    baseline = next((e["stats"].paired.baseline for e in ranked if verdict_of(e["stats"])), "baseline")
    table = _table(f"leaderboard: {board.run_dir} ({board.task or 'unknown task'})")
    notes = [
        f"mean ±half the 95% interval over seeds (ranked by the run's score: search.rank_by); vs {baseline}: "
        "paired verdict, ~ = inconclusive"
        if board.has_stats
        else "",
        _more(hidden),
    ]
    table.caption = "\n".join(note for note in notes if note) or None
    table.caption_justify = "left"
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("name", max_width=18, overflow="ellipsis", no_wrap=True)
    table.add_column("gen", justify="right", no_wrap=True)
    table.add_column("mean ±CI" if board.has_stats else "score", justify="right", no_wrap=True)
    if board.has_stats:
        table.add_column(f"vs {baseline}", no_wrap=True)
    for name in board.metric_columns:  # numbers under a name: neither is split (`pref_accuracy` over two lines)
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("tags", overflow="fold", min_width=10)
    for e in ranked:
        cells = [
            str(e["rank"]),
            str(e["id"]),
            e["name"] or "",
            str(e["generation"]),
            score_text(e["score"], e["stats"]),
        ]
        if board.has_stats:
            cells.append(_VERDICT_MARK.get(verdict_of(e["stats"]) or "", ""))
        cells += [number(e["metrics"].get(name), 3) for name in board.metric_columns]
        cells.append(", ".join(e["tags"]))
        table.add_row(*(escape(cell) for cell in cells))
    return table


def others_table(board: Leaderboard, limit: int | None = None) -> Table | None:
    """``--all``: the proposals that were not ranked (rejected, duplicate, failed, pending) with their reason."""
    others = [e for e in board.entries if e["rank"] is None]
    if not others:
        return None
    table = _table(f"not ranked ({len(others)})")
    table.caption, table.caption_justify = _more(len(others) - limit if limit is not None else 0) or None, "left"
    others = others[:limit]
    for column in ("id", "name", "gen", "status", "stage"):
        table.add_column(
            column,
            no_wrap=True,
            justify="right" if column in ("id", "gen") else "left",
            **({"max_width": 18, "overflow": "ellipsis"} if column == "name" else {}),
        )
    table.add_column("reason", overflow="fold")
    for e in others:
        lines = (e["reason"] or "").splitlines()
        reason = lines[0][: REASON_CHARS * 2] if lines else ""
        cells = [str(e["id"]), e["name"] or "", str(e["generation"]), e["status"], e["stage"] or "", reason]
        table.add_row(*(escape(cell) for cell in cells))
    return table


def _table(title: str) -> Table:
    return Table(
        title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False, title_justify="left"
    )


def _search_view(run_dir: Path, niches: bool, as_json: bool) -> None:
    """``leaderboard --niches`` / ``--models`` (``lossforge.discovery.review.search_views``)."""
    from lossforge.discovery.review.search_views import model_records, models_table, niche_cells, niches_table

    try:
        if niches:
            axes, items = niche_cells(run_dir)
            table = niches_table(axes, items)
        else:
            items = model_records(run_dir)
            table = models_table(items)
    except ReviewError as exc:
        raise fail(str(exc)) from None
    if as_json:
        for item in items:
            emit_json(item)
        return
    table_console(fit=True).print(table)


def register(app: typer.Typer) -> None:
    @app.command("leaderboard")
    def leaderboard_command(
        run_dir: RunDir,
        top: Annotated[int | None, typer.Option(min=1, help="Show only the best N.")] = None,
        include_all: Annotated[
            bool, typer.Option("--all", help="Also list rejected, duplicate and failed proposals.")
        ] = False,
        metrics: Annotated[
            str | None,
            typer.Option(
                help="Metric columns: 'all' or a comma-separated list (default: the task's headline metrics)."
            ),
        ] = None,
        niches: Annotated[bool, typer.Option("--niches", help="Show the niche grid (search.niches) instead.")] = False,
        models: Annotated[
            bool,
            typer.Option(
                "--models", help="Show each LLM model's proposals, success rate, best score and cost instead."
            ),
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")] = False,
    ) -> None:
        """Rank a run's candidates by score (headline metrics, profile tags, mean ±95% CI where multi-seed)."""
        if niches or models:
            _search_view(run_dir, niches, as_json)
            return
        try:
            board = read_leaderboard(run_dir, top=top, include_all=include_all, metrics=metrics)
        except ReviewError as exc:
            raise fail(str(exc)) from None
        if as_json:
            for entry in board.entries:
                emit_json(json_payload(entry))
            return
        console = table_console(fit=metrics is None)
        limit = None if top is not None else TABLE_ROWS
        console.print(leaderboard_table(board, limit))
        others = others_table(board, limit)
        if others is not None:
            console.print(others)


__all__ = ["leaderboard_table", "others_table", "register"]
