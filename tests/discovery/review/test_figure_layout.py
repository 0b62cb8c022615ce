"""The review figures stay readable (issue 21, item 8), checked on the Agg renderer in display pixels: no legend
over data, point labels that neither overlap, cover another point nor leave the axes, a frontier that draws a line
in the legend and in the axes, a best-so-far line that covers generation 0's points; and paired differences
printed with as many decimals as their intervals. Rows are built directly (no training), like the user's run:
two of the best reward/KL points almost on top of each other, at the top of the plot."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from lossforge.discovery.cli import app
from lossforge.discovery.review.plot import RunData, llm_usage, loss_curves, reward_kl, scores
from lossforge.discovery.review.report import render_report
from lossforge.discovery.review.snapshot import open_run
from lossforge.discovery.stats.seed_stats import SeedStats
from lossforge.discovery.storage.archive import Archive
from lossforge.discovery.storage.schema import CandidateRow
from matplotlib.backend_bases import RendererBase
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.transforms import Bbox
from typer.testing import CliRunner

RHO = [r / 2 for r in range(-40, 41)]
# (reward, KL) by id: #2 and #6 are the two best and 0.02 nats apart (the user's "#8"); #1 is DPO.
POINTS = {
    1: (0.40, 1.0),
    2: (0.52, 1.50),
    3: (0.30, 0.5),
    4: (0.45, 2.5),
    5: (0.20, 0.2),
    6: (0.521, 1.52),
    7: (0.35, 3.0),
}
PAIRED = {"baseline": "dpo", "baseline_id": 1, "mean": 0.0123456, "ci": [-0.0102, 0.0349], "verdict": "inconclusive"}


def _curves(id_: int) -> dict[str, object]:
    """An archived profile: falling (logistic), rising and U-shaped (squared) losses by turns, so that the curves
    pass through every corner of the loss panel and no corner is left for a legend inside it."""
    scale = 0.1 * (0.5 + id_)
    shapes = [
        lambda r: 2.0 * math.log1p(math.exp(-scale * r)),
        lambda r: 2.0 * math.log1p(math.exp(scale * r)),
        lambda r: 3.0 * (scale * r - 0.5) ** 2 + 0.05 * id_,
    ]
    loss = [shapes[id_ % 3](r) for r in RHO]
    slope = np.gradient(loss, RHO).tolist()
    return {"curves": {"rho": RHO, "loss": {"0.1": loss}, "dloss_drho": {"0.1": slope}}}


def _row(id_: int, generation: int, status: str = "ok", **fields: object) -> CandidateRow:
    key = f"g{generation}-i{id_}-r0"
    return CandidateRow(
        id=id_,
        proposal_key=key,
        generation=generation,
        idx=id_,
        repair_round=0,
        status=status,
        name=f"cand_{id_}",
        **fields,  # type: ignore[arg-type]
    )


def _run() -> RunData:
    """Ids 1-4 in generation 0 (spread over it), 5-7 and a rejected row in 1, a failed row in 2."""
    rows = []
    for id_, (reward, kl) in POINTS.items():
        metrics = {"reward": reward, "kl": kl}
        row = _row(id_, 0 if id_ <= 4 else 1, score=reward, metrics=metrics, profile=_curves(id_))
        rows.append(row if id_ != 1 else replace(row, name="dpo"))
    rows += [_row(8, 1, "rejected"), _row(9, 2, "failed")]
    # One large second call: both cumulative curves jump at once, then run along the top of the axes (where the
    # legend used to sit).
    calls = [
        {
            "created": 1000.0 + 60 * i,
            "prompt_tokens": 5 + 9000 * (i == 1),
            "completion_tokens": 5,
            "cost_usd": 0.0001 + 0.05 * (i == 1),
        }
        for i in range(6)
    ]
    return RunData(rows=rows, task="sentiment", beta=0.1, confirmation=None, llm_calls=calls)


def _renderer(figure: Figure | None) -> RendererBase:
    assert figure is not None
    figure.canvas.draw()
    return figure.canvas.get_renderer()  # type: ignore[attr-defined]


def _legends(figure: Figure) -> list[Legend]:
    return [*figure.legends, *(ax.get_legend() for ax in figure.axes if ax.get_legend() is not None)]


def _data_points(figure: Figure) -> np.ndarray:
    """(N, 2) display pixels of every plotted point, and of 10 points along each line segment between them."""
    points = []
    for ax in figure.axes:
        for line in ax.get_lines():
            xy = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
            xy = xy[np.isfinite(xy).all(axis=1)]
            steps = np.linspace(0.0, 1.0, 10)[:, None, None]
            points.append((xy[:-1] + steps * (xy[1:] - xy[:-1])).reshape(-1, 2) if len(xy) > 1 else xy)
        for collection in ax.collections:
            points.append(collection.get_offset_transform().transform(collection.get_offsets()))
    return np.concatenate(points)


def _inside(points: np.ndarray, box: Bbox) -> np.ndarray:
    x, y = points[:, 0], points[:, 1]
    return points[(x >= box.x0) & (x <= box.x1) & (y >= box.y0) & (y <= box.y1)]


def _overlap(a: Bbox, b: Bbox) -> bool:
    return min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0)


@pytest.mark.parametrize("build", [loss_curves, scores, reward_kl, llm_usage])
def test_no_legend_hides_data(build: object) -> None:
    figure = build(_run())  # type: ignore[operator]
    renderer = _renderer(figure)
    legends = _legends(figure)
    assert legends, "the figure has a legend"
    points = _data_points(figure)
    for legend in legends:
        box = legend.get_window_extent(renderer)
        covered = _inside(points, box)
        assert len(covered) == 0, f"{len(covered)} data points under the legend, e.g. {covered[:3].tolist()}"
        assert figure.bbox.contains(box.x0, box.y0) and figure.bbox.contains(box.x1, box.y1)
        for ax in figure.axes:  # nor over the tick labels and axis labels it sits beside
            labels = [axis.get_tightbbox(renderer) for axis in (ax.xaxis, ax.yaxis)]
            assert not any(_overlap(box, other) for other in labels if other is not None), (box, labels)


def test_reward_kl_labels_are_apart_inside_and_clear_of_points() -> None:
    figure = reward_kl(_run())
    renderer = _renderer(figure)
    (ax,) = figure.axes
    labels = [t for t in ax.texts if t.get_text().startswith("#")]
    assert sorted(t.get_text() for t in labels) == ["#2", "#4", "#6"]  # the best three
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in labels}
    for (first, a), (second, b) in itertools.combinations(boxes.items(), 2):
        assert not _overlap(a, b.padded(1.0)), f"labels {first} and {second} touch or overlap"
    frame = ax.bbox.padded(-1.0)  # inside the axes, not touching their frame (so inside the figure too)
    for text, box in boxes.items():
        assert frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1), (text, box, ax.bbox)
    markers = np.concatenate([c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections])
    for text, box in boxes.items():
        assert len(_inside(markers, box)) == 0, f"{text} covers a point"


def test_reward_kl_frontier_is_a_visible_line() -> None:
    figure = reward_kl(_run())
    _renderer(figure)
    (legend,) = _legends(figure)
    texts = [t.get_text() for t in legend.get_texts()]
    handle = legend.legend_handles[next(i for i, t in enumerate(texts) if t.startswith("frontier"))]
    assert isinstance(handle, Line2D)
    assert handle.get_linestyle() not in ("None", "none", "", " ") and handle.get_linewidth() >= 1.5
    assert handle.get_alpha() in (None, 1.0)  # a faint thin line beside the markers read as no line at all
    # The lowest-KL point is also the best: a one-point frontier, which must still draw a line in the axes.
    rows = [
        _row(1, 0, score=0.5, metrics={"reward": 0.5, "kl": 0.2}),
        _row(2, 0, score=0.3, metrics={"reward": 0.3, "kl": 2.0}),
    ]
    alone = RunData(rows=rows, task="sentiment", beta=0.1, confirmation=None, llm_calls=[])
    figure = reward_kl(alone)
    _renderer(figure)
    (frontier,) = [line for line in figure.axes[0].get_lines() if line.get_label().startswith("frontier")]
    drawn = frontier.get_transform().transform(np.asarray(frontier.get_xydata(), dtype=float))
    assert np.ptp(drawn[:, 0]) > 100.0, drawn


def test_best_so_far_covers_generation_zeros_points() -> None:
    figure = scores(_run())
    _renderer(figure)
    (ax,) = figure.axes
    (best,) = [line for line in ax.get_lines() if line.get_label() == "best so far"]
    xs, ys = (np.asarray(v, dtype=float) for v in best.get_data())
    scored = np.concatenate([c.get_offsets() for c in ax.collections if c.get_label().startswith("ok")])
    plotted = np.concatenate([c.get_offsets() for c in ax.collections])
    # Starts at generation 0's leftmost point: not left of generation 0, not halfway through its points.
    assert xs[0] == pytest.approx(plotted[:, 0].min()), (xs[0], plotted[:, 0].min())
    for x, score in scored:  # every score at or under the best so far drawn above it (steps hold to the right)
        assert xs[0] <= x <= xs[-1], (x, xs)
        assert ys[np.searchsorted(xs, x, side="right") - 1] >= score - 1e-9, (x, score)


def _confirmed_run(run_dir: Path) -> Path:
    with Archive.open(run_dir) as archive:
        archive.set_meta("config", {"training": {"task": "sentiment", "beta": 0.1}})
        stats = {
            "n": 3,
            "seeds": [7, 8, 9],
            "scores": [0.40, 0.41, 0.43],
            "mean": 0.41333,
            "stderr": 0.009,
            "ci": [0.3745, 0.4522],
            "paired": PAIRED,
        }
        archive.add_candidate(generation=0, idx=0, name="dpo", status="ok", score=0.4, metrics={"reward": 0.4})
        winner = archive.add_candidate(
            generation=0,
            idx=1,
            name="mine",
            status="ok",
            score=0.41,
            stats=SeedStats.from_json(stats),
            metrics={"reward": 0.41},
        )
        result = {"candidate_id": winner, "name": "mine", "role": "candidate", "task": "sentiment", "beta": 0.1}
        meta = {"sentence": "inconclusive", "winner": {"candidate_id": winner}, "results": [{**result, **stats}]}
        archive.set_meta("confirmation", meta)
    return run_dir


def _decimals(text: str) -> list[int]:
    return [len(number.split(".")[1]) if "." in number else 0 for number in re.findall(r"[-+]?\d+(?:\.\d+)?", text)]


def test_paired_difference_has_its_intervals_decimals(tmp_path: Path) -> None:
    run_dir = _confirmed_run(tmp_path / "run")
    with open_run(run_dir) as archive:
        html = render_report(archive)
    cells = re.findall(r"<td>([^<]*)</td>", html)
    (paired,) = [cell for cell in cells if cell.endswith(" vs dpo")]
    assert _decimals(paired.removesuffix(" vs dpo")) == [3, 3, 3], paired  # was 0.01235 [-0.0102, +0.0349]
    assert paired == "+0.012 [-0.010, +0.035] vs dpo"
    (mean,) = re.findall(r'<td class="num">(0\.41[^<]*)</td>', html)
    (interval,) = [cell for cell in cells if cell.startswith("[0.")]
    assert {*_decimals(mean), *_decimals(interval)} == {3}, (mean, interval)  # the mean and its CI agree too
    shown = CliRunner().invoke(app, ["show", str(run_dir), "2"])
    assert shown.exit_code == 0, shown.output
    (line,) = [line for line in shown.stdout.splitlines() if line.startswith("vs dpo:")]
    assert line == "vs dpo: +0.012 [-0.010, +0.035] -> inconclusive"  # was 0.01235 [-0.0102, 0.0349]
