"""`lossforge show RUN ID`: one candidate's code, thought, metrics, profile, lineage and LLM exchange."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from lossforge.discovery.commands.common import RunDir, emit_json, fail
from lossforge.discovery.review import ReviewError, show
from lossforge.discovery.review.show import CLIP_CHARS, clip
from lossforge.discovery.review.summary import estimate_text, json_payload, multi_seed, number, score_text
from lossforge.discovery.stats.seed_stats import PairedStats
from rich.console import Console

REASON_CHARS = 60


def _versus(paired: PairedStats) -> str:
    """``vs dpo: +0.031 [+0.012, +0.050] -> better``"""
    return f"vs {paired.baseline}: {estimate_text(paired.mean, paired.ci)} -> {paired.verdict}"


def print_candidate(row: dict[str, Any], full_prompt: bool) -> None:
    """``show``'s human output; code highlighted on a terminal, plain text when piped."""
    console = Console(highlight=False)
    # Archived text (LLM replies above all) is printed as text, never read as rich markup.
    echo = (lambda text="": console.print(text, markup=False)) if console.is_terminal else typer.echo
    echo(
        f"#{row['id']} {row['name'] or ''}  status={row['status']}  score={score_text(row['score'], row['stats'])}"
        f"  generation={row['generation']}  proposer={row['proposer'] or '-'}"
    )
    stats = row["stats"]
    if multi_seed(stats):
        echo(f"seeds: {list(stats.seeds)}  scores: {[number(s) for s in stats.scores]}")
        paired = stats.paired
        if paired is not None:
            echo(_versus(paired))
    for task in (stats.tasks if stats is not None else None) or ():  # a multi-task run: each task's own numbers
        line = f"task {task.task}: {estimate_text(task.mean, task.ci, signed=False)}"
        line += f"  normalized {number(task.normalized_mean)}"
        echo(line + (f"  {_versus(task.paired)}" if task.paired is not None else ""))
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


def register(app: typer.Typer) -> None:
    @app.command("show")
    def show_command(
        run_dir: RunDir,
        candidate_id: Annotated[int, typer.Argument(help="The candidate's id (see `lossforge leaderboard`).")],
        prompt: Annotated[
            bool, typer.Option("--prompt", help="Print the LLM prompt and reply in full, not clipped.")
        ] = False,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print the candidate as one JSON object on stdout.")
        ] = False,
    ) -> None:
        """Show one candidate: code, thought, metrics, profile, lineage and the LLM exchange behind it."""
        try:
            row = show(run_dir, candidate_id)
        except ReviewError as exc:
            raise fail(str(exc)) from None
        if as_json:
            emit_json(json_payload(row))
            return
        print_candidate(row, prompt)


__all__ = ["print_candidate", "register"]
