"""``lossforge compare``: runs of one task side by side (best score over generations, candidates trained,
LLM cost, time), the LLM-vs-``evolve`` ablation that says how much the LLM adds; or retrained models
(``lossforge retrain`` output directories) side by side, metric by metric, with differences to the first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossforge.discovery.review.runs import overview
from lossforge.discovery.review.snapshot import ReviewError, is_run_dir, open_run
from lossforge.discovery.review.task_info import objective_name
from lossforge.discovery.storage.archive import CandidateRow
from lossforge.evaluate.statuses import SPENT_STATUSES, is_ranked

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RETRAIN_FILE = "metrics.json"
RETRAIN_KIND = "retrain"


def read_retrain(path: Path) -> dict[str, Any] | None:
    """The ``metrics.json`` of a retrain output directory, or None if ``path`` is not one."""
    file = path / RETRAIN_FILE
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReviewError(f"{file} is not readable JSON ({exc}).") from None
    return data if isinstance(data, dict) and data.get("kind") == RETRAIN_KIND else None


def _kind(path: Path) -> str:
    if is_run_dir(path):
        return "run"
    if read_retrain(path) is not None:
        return "retrain"
    if not path.exists():
        raise ReviewError(f"{path} does not exist; pass run directories or `lossforge retrain` output directories.")
    raise ReviewError(
        f"{path} is neither a run directory (no archive.sqlite) nor a retrain output "
        f"(no {RETRAIN_FILE} with kind 'retrain')."
    )


def best_by_generation(rows: list[CandidateRow], generations: int) -> list[float | None]:
    """Best score among the ``ok`` rows of generations 0..g, for each g up to ``generations``."""
    best: list[float | None] = []
    running = -math.inf
    for generation in range(generations + 1):
        scores = [r.score for r in rows if r.generation == generation and is_ranked(r)]
        running = max([running, *scores])
        best.append(running if math.isfinite(running) else None)
    return best


def _run_entry(path: Path) -> dict[str, Any]:
    with open_run(path) as archive:
        info = overview(archive)
        rows = archive.candidates()
    last = max((r.generation for r in rows), default=0)
    trained = sum(1 for r in rows if r.status in SPENT_STATUSES and r.status != "pending")
    return {
        "run_dir": str(path),
        "task": info["task"],
        "proposer": info["proposer"],
        "model": info["model"],
        "state": info["state"],
        "generations_done": info["generations_done"],
        "candidates": info["candidates"],
        "trained": trained,
        "best": info["best"],
        "best_by_generation": best_by_generation(rows, last),
        "llm": info["llm"],
        "wall_s": info["wall_s"],
    }


def compare_runs(paths: list[Path]) -> dict[str, Any]:
    runs = [_run_entry(path) for path in paths]
    tasks = {run["task"] for run in runs}
    if len(tasks) > 1:
        listed = ", ".join(f"{run['run_dir']} trained on {run['task']!r}" for run in runs)
        raise ReviewError(f"runs of different tasks cannot be compared: {listed}.")
    length = max(len(run["best_by_generation"]) for run in runs)
    for run in runs:  # pad: a shorter run's best stays what it was
        curve = run["best_by_generation"]
        run["best_by_generation"] = curve + [curve[-1] if curve else None] * (length - len(curve))
    return {"kind": "runs", "task": runs[0]["task"], "generations": list(range(length)), "runs": runs}


def compare_retrains(paths: list[Path]) -> dict[str, Any]:
    models = []
    for path in paths:
        data = read_retrain(path) or {}
        models.append(
            {
                "path": str(path),
                **{k: data.get(k) for k in ("candidate", "model", "dataset", "recipe")},
                "metrics": dict(data.get("metrics") or {}),
            }
        )
    names = list(dict.fromkeys(name for m in models for name in m["metrics"]))
    first = models[0]["metrics"]
    for model in models[1:]:
        model["difference"] = {
            name: model["metrics"][name] - first[name]
            for name in names
            if isinstance(model["metrics"].get(name), int | float) and isinstance(first.get(name), int | float)
        }
    return {"kind": "retrain", "metrics": names, "models": models}


def compare(paths: list[str | Path]) -> dict[str, Any]:
    """Compare two or more runs of one task, or two or more retrain outputs; anything else is refused."""
    resolved = [Path(p) for p in paths]
    if len(resolved) < 2:
        raise ReviewError("compare needs at least two directories (runs, or retrain outputs).")
    kinds = [_kind(path) for path in resolved]
    if len(set(kinds)) > 1:
        mixed = ", ".join(
            f"{path} is a {'run' if kind == 'run' else 'retrain output'}"
            for path, kind in zip(resolved, kinds, strict=True)
        )
        raise ReviewError(f"compare takes runs or retrain outputs, not both: {mixed}.")
    return compare_runs(resolved) if kinds[0] == "run" else compare_retrains(resolved)


def compare_figure(result: dict[str, Any]) -> Figure:
    """Best score so far against generation, one line per run."""
    from lossforge.discovery.review.figure_layout import legend_below
    from lossforge.discovery.review.plot import new_figure

    figure, (ax,) = new_figure(f"Best score over generations ({result['task']})")
    for run in result["runs"]:
        label = Path(run["run_dir"]).name + f" ({run['proposer']}{':' + run['model'] if run['model'] else ''})"
        values = [math.nan if v is None else v for v in run["best_by_generation"]]
        ax.step(result["generations"], values, where="post", marker="o", lw=1.5, label=label)
    ax.set(xlabel="generation (0 = library seeds)", ylabel=f"best {objective_name(result['task'])} so far")
    ax.set_xticks(result["generations"])
    legend_below(figure, *ax.get_legend_handles_labels())  # off the lines, whatever their shape
    return figure


__all__ = ["RETRAIN_FILE", "best_by_generation", "compare", "compare_figure", "read_retrain"]
