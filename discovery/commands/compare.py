"""`lossforge compare A B [...]`: runs of one task (or retrained models) side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from lossforge.discovery.commands.common import emit_json, fail, table_console
from lossforge.discovery.review import ReviewError
from lossforge.discovery.review.compare import compare
from lossforge.discovery.review.summary import number
from rich import box
from rich.markup import escape
from rich.table import Table


def _table(title: str) -> Table:
    return Table(
        title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False, title_justify="left"
    )


def _label(path: str) -> str:
    return Path(path).name or path


def runs_tables(result: dict[str, Any]) -> list[Table]:
    overview = _table(f"runs on {result['task']}")
    for column in ("run", "proposer", "state", "trained", "candidates", "best", "LLM tokens", "cost $", "time"):
        overview.add_column(column, justify="left" if column in ("run", "proposer", "state", "best") else "right")
    for run in result["runs"]:
        best = run["best"]
        overview.add_row(
            *(
                escape(str(cell))
                for cell in (
                    _label(run["run_dir"]),
                    run["proposer"] + (f":{run['model']}" if run["model"] else ""),
                    run["state"],
                    run["trained"],
                    run["candidates"],
                    f"{number(best['score'])} #{best['id']}" if best else "-",
                    run["llm"]["tokens"],
                    f"{run['llm']['cost_usd']:.4f}",
                    f"{run['wall_s']:.0f} s" if run["wall_s"] is not None else "-",
                )
            )
        )
    curves = _table("best score so far, by generation")
    curves.add_column("run")
    for generation in result["generations"]:
        curves.add_column(f"g{generation}", justify="right")
    first = result["runs"][0]["best_by_generation"]
    for run in result["runs"]:
        curves.add_row(escape(_label(run["run_dir"])), *(number(v) for v in run["best_by_generation"]))
    for run in result["runs"][1:]:
        diffs = [
            number(b - a) if a is not None and b is not None else "-"
            for a, b in zip(first, run["best_by_generation"], strict=True)
        ]
        curves.add_row(escape(f"{_label(run['run_dir'])} - {_label(result['runs'][0]['run_dir'])}"), *diffs)
    return [overview, curves]


def retrain_table(result: dict[str, Any]) -> Table:
    models = result["models"]
    table = _table("retrained models: " + " vs ".join(escape(str(m["candidate"])) for m in models))
    table.add_column("metric")
    for model in models:
        table.add_column(escape(f"{_label(model['path'])} ({model['candidate']})"), justify="right")
    for model in models[1:]:
        table.add_column(escape(f"{_label(model['path'])} - {_label(models[0]['path'])}"), justify="right")
    for name in result["metrics"]:
        cells = [number(m["metrics"].get(name)) for m in models]
        cells += [number(m["difference"].get(name)) for m in models[1:]]
        table.add_row(escape(name), *cells)
    return table


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_command(
        paths: Annotated[
            list[Path],
            typer.Argument(help="Two or more run directories of one task, or `lossforge retrain` output directories."),
        ],
        figure: Annotated[
            Path | None, typer.Option(help="Also draw the best score over generations to this PNG file (runs only).")
        ] = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print the comparison as one JSON object on stdout.")
        ] = False,
    ) -> None:
        """Compare runs (best score over generations, trained, cost, time) or retrained models (metrics,
        differences)."""
        try:
            result = compare(paths)
        except ReviewError as exc:
            raise fail(str(exc)) from None
        if figure is not None:
            if result["kind"] != "runs":
                raise fail("--figure draws runs; retrain outputs have no generations to draw.")
            from lossforge.discovery.review.compare import compare_figure
            from lossforge.discovery.review.plot import png_bytes

            figure.parent.mkdir(parents=True, exist_ok=True)
            figure.write_bytes(png_bytes(compare_figure(result)))
            result["figure"] = str(figure)
        if as_json:
            emit_json(result)
            return
        console = table_console(fit=True)
        for table in runs_tables(result) if result["kind"] == "runs" else [retrain_table(result)]:
            console.print(table)
        if figure is not None:
            typer.echo(f"wrote {figure}", err=True)


__all__ = ["register", "retrain_table", "runs_tables"]
