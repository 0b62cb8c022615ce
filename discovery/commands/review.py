"""`lossforge leaderboard`, `lossforge show` and `lossforge promote`: review a run and keep its winner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from lossforge.discovery.commands.common import emit_json, fail
from lossforge.discovery.review import ReviewError, promote, read_leaderboard, show
from lossforge.discovery.review.leaderboard import Leaderboard
from lossforge.discovery.review.show import CLIP_CHARS, clip
from lossforge.discovery.review.summary import estimate_text, multi_seed, number, score_text, verdict_of
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

RunDir = Annotated[Path, typer.Argument(help="A run directory (the --out of `lossforge run`).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]
TABLE_WIDTH = 100  # the leaderboard fits a normal terminal unless more metrics are asked for
REASON_CHARS = 60
# Rows a human table shows without --top (ranked and unranked each): a screenful, and rich lays out a table of
# hundreds of rows in about a second; --top N shows more, --json everything.
TABLE_ROWS = 50
_VERDICT_MARK = {"better": "better", "worse": "worse", "inconclusive": "~"}


def table_console(fit: bool) -> Console:
    """A console ``TABLE_WIDTH`` wide (or the terminal's width, if narrower) when ``fit``; else wide enough
    for any table, so that ``--metrics all`` never wraps."""
    console = Console()
    if not fit:
        return Console(width=max(console.width, 1000)) if not console.is_terminal else console
    return Console(width=min(console.width, TABLE_WIDTH) if console.is_terminal else TABLE_WIDTH)


def _more(hidden: int) -> str:
    return f"{hidden} more not shown: --top N shows more, --json all" if hidden > 0 else ""


def leaderboard_table(board: Leaderboard, limit: int | None = None) -> Table:
    """The ranked (trained) entries (the first ``limit``): score or mean ±CI, verdict, metrics, profile tags."""
    ranked = [e for e in board.entries if e["rank"] is not None]
    hidden = len(ranked) - limit if limit is not None else 0
    ranked = ranked[:limit]
    baseline = next((e["stats"]["paired"].get("baseline") for e in ranked if verdict_of(e["stats"])), "baseline")
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


def print_candidate(row: dict[str, Any], full_prompt: bool) -> None:
    """``show``'s human output; code highlighted on a terminal, plain text when piped."""
    console = Console(highlight=False)
    # Archived text (LLM replies above all) is printed as text, never read as rich markup.
    echo = (lambda text="": console.print(text, markup=False)) if console.is_terminal else typer.echo
    echo(
        f"#{row['id']} {row['name'] or ''}  status={row['status']}  score={score_text(row['score'], row['stats'])}"
        f"  generation={row['generation']}  proposer={row['proposer'] or '-'}"
    )
    if multi_seed(row["stats"]):
        stats, paired = row["stats"], row["stats"].get("paired") or {}
        echo(f"seeds: {stats.get('seeds')}  scores: {[number(s) for s in stats.get('scores') or []]}")
        if paired:
            echo(
                f"vs {paired.get('baseline')}: {estimate_text(paired.get('mean'), paired.get('ci'))} -> "
                f"{paired.get('verdict')}"
            )
    if row["reason"]:
        echo(f"reason ({row['stage'] or 'no stage'}): {row['reason']}")
    if row["thought"]:
        echo(f"thought: {row['thought']}")
    if row["metrics"]:
        echo("metrics:" + ("  (headline first)" if row["headline"] else ""))
        for key, value in row["metrics"].items():
            echo(f"  {key}: {number(value, 6)}")
    if row["tags"]:
        echo(f"tags: {', '.join(row['tags'])}")
    for note in (row["profile"] or {}).get("notes", []):
        echo(f"  profile: {note}")
    _print_lineage(echo, row["lineage"])
    for done in row["confirmations"]:
        echo(
            f"confirmation: {done['task']} beta={done['beta']:g} seed={done['seed']}: {done['status']} "
            f"{number(done['score'])}{' (' + done['error'] + ')' if done['error'] else ''}"
        )
    _print_exchange(echo, row, full_prompt)
    if row["code"]:
        echo(f"code ({row['code_path'] or 'not written'}):")
        if console.is_terminal:
            from rich.syntax import Syntax  # pygments' lexers cost a tenth of a second to import

            console.print(Syntax(row["code"], "python", line_numbers=False))
        else:
            typer.echo(row["code"].rstrip("\n"))


def _print_lineage(echo: Any, lineage: dict[str, list[dict[str, Any]]]) -> None:
    def brief(item: dict[str, Any]) -> str:
        return f"#{item['id']} {item['name'] or '?'} ({item['status'] or 'not in this run'}, {number(item['score'])})"

    echo(f"parents: {', '.join(brief(p) for p in lineage['parents']) or 'none'}")
    echo(f"children: {', '.join(brief(c) for c in lineage['children']) or 'none'}")


def _print_exchange(echo: Any, row: dict[str, Any], full: bool) -> None:
    for attempt in row["attempts"]:
        mark = "  <- this one" if attempt["id"] == row["id"] else ""
        echo(
            f"round {attempt['repair_round']}: #{attempt['id']} {attempt['status']}"
            f"{' at ' + attempt['stage'] if attempt['status'] == 'rejected' else ''}"
            f"{': ' + attempt['reason'].splitlines()[0][:REASON_CHARS] if attempt['reason'] else ''}{mark}"
        )
    call = row["exchange"]
    if call is None:
        return
    limit = None if full else CLIP_CHARS
    echo(
        f"LLM exchange (call {call['id']}, model {call['model']}, {call['prompt_tokens']}+{call['completion_tokens']} "
        f"tokens, ${call['cost_usd'] or 0:.4f}){'' if full else '; --prompt prints it in full'}:"
    )
    for message in call["messages"] or []:
        text = message.get("content") or ""
        echo(f"--- {message.get('role')} ---\n{text if limit is None else clip(text, limit)}")
    echo(f"--- reply ---\n{call['reply'] if limit is None else clip(call['reply'], limit)}")


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
        as_json: JsonFlag = False,
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
                emit_json(entry)
            return
        console = table_console(fit=metrics is None)
        limit = None if top is not None else TABLE_ROWS
        console.print(leaderboard_table(board, limit))
        others = others_table(board, limit)
        if others is not None:
            console.print(others)

    @app.command("show")
    def show_command(
        run_dir: RunDir,
        candidate_id: Annotated[int, typer.Argument(help="The candidate's id (see `lossforge leaderboard`).")],
        prompt: Annotated[
            bool, typer.Option("--prompt", help="Print the LLM prompt and reply in full, not clipped.")
        ] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Show one candidate: code, thought, metrics, profile, lineage and the LLM exchange behind it."""
        try:
            row = show(run_dir, candidate_id)
        except ReviewError as exc:
            raise fail(str(exc)) from None
        if as_json:
            emit_json(row)
            return
        print_candidate(row, prompt)

    @app.command("promote")
    def promote_command(
        run_dir: RunDir,
        candidate_id: Annotated[int, typer.Argument(help="The candidate's id.")],
        name: Annotated[str | None, typer.Option(help="Library name (default: the candidate's name).")] = None,
        library: Annotated[
            Path | None,
            typer.Option(
                help="Library folder to write to (default: $LOSSFORGE_HOME/candidates; e.g. candidates/ of a source checkout)."
            ),
        ] = None,
        force: Annotated[
            bool,
            typer.Option(
                help="Promote a candidate that did not train to 'ok', or replace an existing file of that name."
            ),
        ] = False,
        as_json: JsonFlag = False,
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


__all__ = ["leaderboard_table", "others_table", "print_candidate", "register", "table_console"]
