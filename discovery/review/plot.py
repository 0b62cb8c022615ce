"""The figures of a run, drawn from its archive with matplotlib's object API on the Agg canvas (no pyplot, no
global backend state, no display needed):

- ``loss_curves``: loss and dloss/drho against the margin rho for the top candidates beside DPO, from the
  archived profiles: the figure DiscoPOP (arXiv 2406.08414, Fig. 4) uses to explain LRML;
- ``scores``: every candidate's score over generations, coloured by status, with the best so far;
- ``reward_kl``: gold reward against KL to the reference (``sentiment``): the DPO paper's frontier
  (arXiv 2305.18290, Fig. 2 left);
- ``confirmation``: confirmed scores with their 95% intervals beside the baseline, where the run has them;
- ``llm_usage``: LLM tokens and cost over the run's wall-clock time, for LLM runs.

Each builder returns ``None`` where the run has nothing to draw, so a run gets only the figures it supports.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossforge.discovery.review.figure_layout import legend_below, place_labels
from lossforge.discovery.review.snapshot import RunSnapshot, open_run
from lossforge.discovery.review.summary import run_task
from lossforge.discovery.review.task_info import objective_name
from lossforge.discovery.search.ranking import best_first
from lossforge.discovery.storage.archive import CandidateRow
from lossforge.evaluate.statuses import CANDIDATE_STATUSES, is_ranked
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

STATUS_COLOURS = {
    "ok": "tab:green",
    "rejected": "tab:orange",
    "duplicate": "tab:cyan",
    "diverged": "tab:red",
    "failed": "tab:purple",
    "timeout": "tab:brown",
    "pending": "tab:gray",
}
ROLE_COLOURS = {"candidate": "tab:blue", "baseline": "black", "best_library": "tab:orange"}
SIZE = (8.0, 4.5)  # inches at 100 dpi: 800 x 450 px, readable at 100% zoom
DPI = 100
DEFAULT_TOP = 5
LABELLED = 3  # points labelled with their id on the reward/KL figure, best first
SPREAD = 0.3  # half the width, in generations, over which one generation's candidates are spread


@dataclass(frozen=True)
class RunData:
    """What the figures need from one run, read in one snapshot."""

    rows: list[CandidateRow]
    task: str | None
    beta: float
    confirmation: dict[str, Any] | None
    llm_calls: list[dict[str, Any]]


def read_run_data(archive: RunSnapshot) -> RunData:
    config = archive.get_meta("config") or {}
    confirmation = archive.get_meta("confirmation")
    return RunData(
        rows=archive.candidates(),
        task=run_task(config),
        beta=float((config.get("training") or {}).get("beta") or 0.1),
        confirmation=confirmation if isinstance(confirmation, dict) else None,
        llm_calls=archive.llm_calls(),
    )


def new_figure(title: str, ncols: int = 1, left: float = 0.14, right: float = 0.97) -> tuple[Figure, list[Any]]:
    """A titled figure of ``ncols`` gridded axes in a row, on its own Agg canvas."""
    # Fixed margins: matplotlib's constrained layout costs about half a second per figure.
    figure = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=left, right=right, bottom=0.12, top=0.88, wspace=0.38)
    axes = [figure.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    figure.suptitle(title, fontsize=12)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return figure, axes


def _curve_key(curves: dict[str, Any], beta: float) -> str | None:
    keys = list((curves.get("loss") or {}).keys())
    wanted = f"{beta:g}"
    return wanted if wanted in keys else ("0.1" if "0.1" in keys else (keys[0] if keys else None))


def _finite_pairs(xs: list[float], ys: list[Any]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=False) if isinstance(y, int | float) and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def loss_curves(data: RunData, top: int = DEFAULT_TOP) -> Figure | None:
    """Loss and dloss/drho along rho at the run's beta for the ``top`` best candidates, DPO dashed.

    DPO (arXiv 2305.18290, Eq. 7) is drawn from its closed form: loss = softplus(-beta rho),
    dloss/drho = -beta sigmoid(-beta rho)."""
    shown = [row for row in best_first(data.rows) if (row.profile or {}).get("curves") and row.name != "dpo"][:top]
    if not shown:
        return None
    curves = shown[0].profile["curves"]  # type: ignore[index]
    key = _curve_key(curves, data.beta)
    if key is None:
        return None
    beta = float(key)
    figure, (loss_ax, grad_ax) = new_figure(
        f"Loss and its gradient along the margin (beta = {key}), top {len(shown)} vs DPO", 2, left=0.09
    )
    rho = [float(r) for r in curves["rho"]]
    loss_ax.plot(rho, [_softplus(-beta * r) for r in rho], "k--", lw=2, label="dpo (closed form)")
    grad_ax.plot(rho, [-beta * _sigmoid(-beta * r) for r in rho], "k--", lw=2, label="dpo (closed form)")
    for row in shown:
        row_curves = row.profile["curves"]  # type: ignore[index]
        label = f"#{row.id} {row.name or ''}"[:28]
        xs = [float(r) for r in row_curves.get("rho", rho)]
        loss_ax.plot(*_finite_pairs(xs, (row_curves.get("loss") or {}).get(key, [])), lw=1.5, label=label)
        grad_ax.plot(*_finite_pairs(xs, (row_curves.get("dloss_drho") or {}).get(key, [])), lw=1.5, label=label)
    # Symmetric-log axes: a quadratic loss (IPO-like) reaches thousands where DPO stays below 5; both stay legible.
    loss_ax.set_yscale("symlog", linthresh=1.0)
    grad_ax.set_yscale("symlog", linthresh=beta)
    loss_ax.set(xlabel="rho = chosen log-ratio - rejected log-ratio (nats)", ylabel="loss per pair (symlog)")
    grad_ax.set(xlabel="rho (nats)", ylabel="dloss / drho (per nat, symlog)")
    grad_ax.axhline(0.0, color="gray", lw=0.8)
    # One legend for both panels (they share their curves), under them: inside, six curves leave it no free corner.
    legend_below(figure, *loss_ax.get_legend_handles_labels())
    return figure


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def scores(data: RunData) -> Figure | None:
    """Each candidate at its generation (spread within it), coloured by status; unscored ones on a strip
    below the scores; the best-so-far step line."""
    if not data.rows:
        return None
    unit = objective_name(data.task)
    figure, (ax,) = new_figure(f"Scores over generations ({len(data.rows)} candidates)")
    scored = [r.score for r in data.rows if is_ranked(r)]
    low, high = (min(scored), max(scored)) if scored else (0.0, 1.0)
    strip = low - 0.12 * ((high - low) or 1.0)  # where rows without a score are drawn
    by_generation: dict[int, list[CandidateRow]] = {}
    for row in data.rows:
        by_generation.setdefault(row.generation, []).append(row)
    points: dict[str, tuple[list[float], list[float]]] = {}
    for generation, members in by_generation.items():
        for i, row in enumerate(members):
            x = generation + (0.0 if len(members) == 1 else 2 * SPREAD * i / (len(members) - 1) - SPREAD)
            has_score = is_ranked(row)
            xs, ys = points.setdefault(row.status, ([], []))
            xs.append(x)
            ys.append(float(row.score) if has_score else strip)  # type: ignore[arg-type]
    for status in CANDIDATE_STATUSES:
        if status in points:
            marker = "o" if status == "ok" else "x"
            ax.scatter(
                *points[status],
                c=STATUS_COLOURS[status],
                marker=marker,
                s=28,
                label=f"{status} ({len(points[status][0])})",
            )
    generations = sorted(by_generation)
    best, running = [], -math.inf
    for generation in generations:
        in_generation = [r.score for r in by_generation[generation] if is_ranked(r)]
        running = max([running, *in_generation])
        best.append(running if math.isfinite(running) else math.nan)
    # Each step starts at its generation's leftmost point, so the line spans every point it summarises (starting
    # at the tick, it began halfway through generation 0's points); the last step runs to the right edge of its
    # generation's spread, so a one-generation run shows a line.
    starts = [g - (SPREAD if len(by_generation[g]) > 1 else 0.0) for g in generations]
    ax.step(
        [*starts, generations[-1] + SPREAD], [*best, best[-1]], where="post", color="black", lw=1.5, label="best so far"
    )
    ax.set(xlabel="generation (0 = library seeds)", ylabel=f"{unit} (higher is better)")
    ax.set_xticks(generations)
    if len(points) > 1 or "ok" not in points:
        ax.axhline(strip, color="gray", lw=0.5, ls=":")
        ax.annotate(
            "not scored",
            (generations[0] - SPREAD, strip),
            fontsize=8,
            color="gray",
            xytext=(0, 4),
            textcoords="offset points",
        )
    legend_below(figure, *ax.get_legend_handles_labels())
    return figure


def reward_kl(data: RunData) -> Figure | None:
    """Gold reward against KL to the reference for every trained candidate, DPO marked, frontier drawn."""
    rows = [
        r
        for r in data.rows
        if r.status == "ok"
        and isinstance(r.metrics.get("reward"), int | float)
        and isinstance(r.metrics.get("kl"), int | float)
    ]
    if not rows:
        return None
    figure, (ax,) = new_figure("Reward against KL to the reference (the DPO paper's frontier)")
    kl = [float(r.metrics["kl"]) for r in rows]
    reward = [float(r.metrics["reward"]) for r in rows]
    ax.scatter(kl, reward, c="tab:blue", s=28, label="trained candidates", zorder=2)
    # The frontier is a staircase (best reward at that KL or less holds until a better point), run out to the
    # largest KL so that even a one-point frontier draws a line; drawn opaque and wider than the markers' edge so
    # its legend entry reads as a line.
    frontier, best = [], -math.inf
    for x, y in sorted(zip(kl, reward, strict=True)):
        if y > best:
            frontier.append((x, y))
            best = y
    steps = [*frontier, (max(kl), frontier[-1][1])] if frontier else []
    ax.step(
        [p[0] for p in steps],
        [p[1] for p in steps],
        where="post",
        color="tab:orange",
        lw=1.8,
        label="frontier (best reward at that KL or less)",
        zorder=1,
    )
    for row, x, y in zip(rows, kl, reward, strict=True):
        if row.name == "dpo":
            ax.scatter([x], [y], c="black", marker="*", s=160, label="dpo", zorder=3)
    ax.set(xlabel="KL(policy || reference) per completion (nats)", ylabel="gold reward of samples")
    ax.margins(x=0.08, y=0.12)  # room inside the frame for the labels of the points at its edges
    legend_below(figure, *ax.get_legend_handles_labels())
    # Labelled last: placing needs the axes' final size and limits.
    labelled = best_first(rows)[:LABELLED]
    place_labels(
        ax, [(float(r.metrics["kl"]), float(r.metrics["reward"])) for r in labelled], [f"#{r.id}" for r in labelled]
    )
    return figure


def confirmation(data: RunData) -> Figure | None:
    """Confirmed mean scores with 95% intervals, one bar per result, the baseline as a vertical line."""
    results = [r for r in (data.confirmation or {}).get("results") or [] if isinstance(r.get("mean"), int | float)]
    if not results:
        return None
    settings = {(r.get("task"), r.get("beta")) for r in results}
    one_setting = len(settings) == 1  # then the title names it, not every label
    where = f" ({next(iter(settings))[0]}, beta {next(iter(settings))[1]})" if one_setting else ""
    figure, (ax,) = new_figure(f"Confirmed on held-out seeds{where}: mean with 95% interval", left=0.3)
    labels = []
    for i, result in enumerate(results):
        mean, ci = float(result["mean"]), result.get("ci")
        err = [[mean - ci[0]], [ci[1] - mean]] if ci else None
        colour = ROLE_COLOURS.get(result.get("role", ""), "tab:gray")
        ax.errorbar([mean], [i], xerr=err, fmt="o", color=colour, capsize=4)
        setting = "" if one_setting else f", {result.get('task')}, beta {result.get('beta')}"
        labels.append(f"{result.get('name') or result.get('candidate_id')} ({result.get('role')}{setting})"[:40])
        if result.get("role") == "baseline":
            ax.axvline(mean, color="black", ls="--", lw=1)
    ax.set_yticks(range(len(results)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{objective_name(data.task)} (mean over held-out seeds)")
    sentence = (data.confirmation or {}).get("sentence")
    if sentence:
        ax.set_title(sentence, fontsize=9)
    return figure


def llm_usage(data: RunData) -> Figure | None:
    """Cumulative LLM tokens (left axis) and cost in USD (right axis) against minutes since the first call."""
    calls = [c for c in data.llm_calls if c.get("created")]
    if not calls:
        return None
    start = float(calls[0]["created"])
    minutes = [(float(c["created"]) - start) / 60.0 for c in calls]
    tokens, cost, total_tokens, total_cost = [], [], 0, 0.0
    for call in calls:
        total_tokens += int(call.get("prompt_tokens") or 0) + int(call.get("completion_tokens") or 0)
        total_cost += float(call.get("cost_usd") or 0.0)
        tokens.append(total_tokens)
        cost.append(total_cost)
    figure, (ax,) = new_figure(f"LLM usage: {len(calls)} calls, {total_tokens} tokens, ${total_cost:.4f}", right=0.88)
    ax.step(minutes, tokens, where="post", color="tab:blue", label="tokens (prompt + completion)")
    ax.set(xlabel="minutes since the first call", ylabel="cumulative tokens")
    cost_ax = ax.twinx()
    cost_ax.step(minutes, cost, where="post", color="tab:red", ls="--", label="cost")
    cost_ax.set_ylabel("cumulative cost (USD)")
    lines = [*ax.get_lines(), *cost_ax.get_lines()]  # one legend for both y axes
    legend_below(figure, lines, [str(line.get_label()) for line in lines])
    return figure


def run_figures(data: RunData, top: int = DEFAULT_TOP) -> dict[str, Figure]:
    """Every figure the run supports, by file stem, in reading order."""
    built = {
        "loss_curves": loss_curves(data, top),
        "scores": scores(data),
        "reward_kl": reward_kl(data),
        "confirmation": confirmation(data),
        "llm_usage": llm_usage(data),
    }
    return {name: figure for name, figure in built.items() if figure is not None}


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None, top: int = DEFAULT_TOP) -> list[Path]:
    """Write the run's figures as PNG files into ``out_dir`` (default ``RUN/figures``); returns their paths."""
    with open_run(run_dir) as archive:
        data = read_run_data(archive)
    target = Path(out_dir) if out_dir is not None else Path(run_dir) / "figures"
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in run_figures(data, top).items():
        path = target / f"{name}.png"
        path.write_bytes(png_bytes(figure))
        paths.append(path)
    return paths


__all__ = [
    "DEFAULT_TOP",
    "RunData",
    "confirmation",
    "llm_usage",
    "loss_curves",
    "new_figure",
    "plot_run",
    "png_bytes",
    "read_run_data",
    "reward_kl",
    "run_figures",
    "scores",
]
