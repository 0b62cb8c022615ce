"""Review views of the smarter search (issue 11): the niche grid and each ensemble model's record.

``leaderboard RUN --niches`` prints ``niche_cells`` (the run's ``search.niches`` axes, or ``DEFAULT_AXES`` for
a run without them: any run's profiles can be placed on the grid afterwards); ``leaderboard RUN --models``
prints ``model_records``: per model (the ``llm:<model>`` origin of the rows) its proposals, how many trained to
a score, the best score and the dollars its calls cost. Read from a read-only snapshot; no torch.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from lossforge.discovery.review.snapshot import open_run
from lossforge.discovery.search.niches import niche_grid
from lossforge.discovery.search.ranking import best_first
from rich.table import Table

DEFAULT_AXES = ("rho_only", "convex", "bounded", "targets_margin")


def niche_cells(run_dir: str | Path) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """The axes and the filled niches of a run, best elite first."""
    with open_run(run_dir) as archive:
        rows = archive.candidates()
        configured = ((archive.get_meta("config") or {}).get("search") or {}).get("niches")
    axes = tuple(configured) if configured else DEFAULT_AXES
    return axes, [asdict(cell) for cell in niche_grid(rows, axes)]


def model_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """Per LLM model of the run: proposals, trained (ok), success rate, best row, cost in USD."""
    with open_run(run_dir) as archive:
        rows = [row for row in archive.candidates() if (row.origin or "").startswith("llm:")]
        costs = {
            row.id: float((archive.llm_call(row.prompt_id) or {}).get("cost_usd") or 0.0)
            for row in rows
            if row.prompt_id is not None
        }
    records = []
    for model in sorted({(row.origin or "").removeprefix("llm:") for row in rows}):
        own = [row for row in rows if row.origin == f"llm:{model}"]
        ok = [row for row in own if row.status == "ok"]
        best = best_first(own)
        records.append(
            {
                "model": model,
                "proposals": len(own),
                "ok": len(ok),
                "success_rate": round(len(ok) / len(own), 4),
                "best_id": best[0].id if best else None,
                "best_score": best[0].score if best else None,
                "cost_usd": round(sum(costs.get(row.id, 0.0) for row in own), 6),
            }
        )
    return records


def niches_table(axes: tuple[str, ...], cells: list[dict[str, Any]]) -> Table:
    table = Table(title=f"niches over {', '.join(axes)}: {len(cells)} filled")
    for column in ("niche", "elite", "score", "candidates", "scored"):
        table.add_column(column, justify="right" if column in ("score", "candidates", "scored") else "left")
    for cell in cells:
        elite = f"#{cell['elite_id']} {cell['elite_name']}" if cell["elite_id"] is not None else "-"
        score = f"{cell['elite_score']:.4g}" if cell["elite_score"] is not None else "-"
        table.add_row(cell["niche"], elite, score, str(cell["candidates"]), str(cell["scored"]))
    return table


def models_table(records: list[dict[str, Any]]) -> Table:
    table = Table(title="LLM models")
    for column in ("model", "proposals", "ok", "success", "best", "cost $"):
        table.add_column(column, justify="left" if column in ("model", "best") else "right")
    for r in records:
        best = f"#{r['best_id']} {r['best_score']:.4g}" if r["best_id"] is not None else "-"
        table.add_row(
            r["model"],
            str(r["proposals"]),
            str(r["ok"]),
            f"{100 * r['success_rate']:.0f}%",
            best,
            f"{r['cost_usd']:.4f}",
        )
    return table


__all__ = ["DEFAULT_AXES", "model_records", "models_table", "niche_cells", "niches_table"]
