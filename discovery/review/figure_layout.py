"""Where the review figures put their legends and point labels, so neither hides data (issue 21, item 8):

- ``legend_below``: one legend under the axes, in as few rows as fit the figure's width, the bottom margin grown
  to hold it. A legend inside the axes covers data in whichever corner it sits once a figure holds enough curves
  (``loc="best"`` only picks the least bad corner);
- ``place_labels``: each point's label at the first of a fixed list of offsets whose box stays inside the axes
  and clear of the labels already placed and of every scatter marker (a small, deterministic take on
  adjustText, measured in display pixels on the figure's Agg renderer).

Both measure text with the renderer, so they run after everything that changes the axes' size or limits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox

BOTTOM = 0.12  # figure fraction under the axes for the tick labels and the x label (as ``plot.new_figure``)
LEGEND_FONT = 8
LABEL_FONT = 8
INSET = 2.0  # pixels a label keeps from the axes' frame, so it never touches an edge
GAP = 1.0  # pixels kept between two labels, or a label and a marker: touching boxes read as one label
# (x sign, y sign, horizontal alignment, vertical alignment): above-right first (where a reader looks), then the
# other corners, then the sides. Each ring of offsets is tried further out once every spot of the nearer is taken.
_SPOTS = (
    (1, 1, "left", "bottom"),
    (-1, 1, "right", "bottom"),
    (1, -1, "left", "top"),
    (-1, -1, "right", "top"),
    (1, 0, "left", "center"),
    (-1, 0, "right", "center"),
    (0, 1, "center", "bottom"),
    (0, -1, "center", "top"),
)
_RINGS = (4.0, 10.0, 17.0, 26.0)  # offsets in points


def legend_below(figure: Figure, handles: Sequence[Any], labels: Sequence[str]) -> Legend | None:
    """A legend of ``handles`` centred under the axes, the bottom margin grown to hold it; ``None`` when empty."""
    if not handles:
        return None
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    for ncols in range(len(handles), 0, -1):  # the fewest rows that fit the width
        legend = figure.legend(
            handles,
            labels,
            loc="lower center",
            bbox_to_anchor=(0.5, 0.005),
            ncols=ncols,
            fontsize=LEGEND_FONT,
            frameon=False,
        )
        box = legend.get_window_extent(renderer)
        if box.width <= 0.98 * figure.bbox.width or ncols == 1:
            break
        legend.remove()
    figure.subplots_adjust(bottom=BOTTOM + (box.height + 4.0) / figure.bbox.height)
    return legend


def place_labels(ax: Axes, points: Sequence[tuple[float, float]], texts: Sequence[str]) -> list[Annotation]:
    """Annotate ``points`` (data coordinates) with ``texts``, earlier points getting the nearer spots.

    A label goes to the first spot with no clash; where every spot clashes, to the one with the least overlap."""
    # Freeze the limits: the positions measured now must be those drawn, whatever is added to the axes later.
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    renderer = ax.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    frame = ax.bbox.padded(-INSET)
    markers = _marker_boxes(ax)
    placed: list[Bbox] = []
    annotations = []
    spots = [((sx * distance, sy * distance), ha, va) for distance in _RINGS for sx, sy, ha, va in _SPOTS]
    for point, text in zip(points, texts, strict=True):
        annotation = ax.annotate(text, point, xytext=(0.0, 0.0), textcoords="offset points", fontsize=LABEL_FONT)
        best, least = spots[0], math.inf
        for spot in spots:
            _move(annotation, *spot)
            cost = _clash(annotation.get_window_extent(renderer), frame, placed, markers)
            if cost < least:
                best, least = spot, cost
            if cost == 0.0:
                break
        _move(annotation, *best)
        placed.append(annotation.get_window_extent(renderer))
        annotations.append(annotation)
    return annotations


def _move(annotation: Annotation, offset: tuple[float, float], ha: str, va: str) -> None:
    annotation.xyann = offset
    annotation.set_horizontalalignment(ha)
    annotation.set_verticalalignment(va)


def _clash(box: Bbox, frame: Bbox, placed: Sequence[Bbox], markers: Sequence[Bbox]) -> float:
    """Square pixels of ``box`` outside ``frame`` (weighted: a clipped label is unreadable) or over other boxes."""
    inside = _overlap(box, frame)
    outside = box.width * box.height - inside
    padded = box.padded(GAP)
    return 10.0 * outside + sum(_overlap(padded, other) for other in [*placed, *markers])


def _overlap(a: Bbox, b: Bbox) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0


def _marker_boxes(ax: Axes) -> list[Bbox]:
    """The display box of every scatter marker on ``ax`` (a marker of area ``s`` pt^2 is about sqrt(s) pt wide)."""
    boxes = []
    pixels_per_point = ax.figure.dpi / 72.0
    for collection in ax.collections:
        if not isinstance(collection, PathCollection):
            continue
        centres = collection.get_offset_transform().transform(collection.get_offsets())
        sizes = collection.get_sizes()
        for i, (x, y) in enumerate(centres):
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            half = math.sqrt(float(sizes[i % len(sizes)]) if len(sizes) else 36.0) / 2.0 * pixels_per_point
            boxes.append(Bbox.from_extents(x - half, y - half, x + half, y + half))
    return boxes


__all__ = ["BOTTOM", "legend_below", "place_labels"]
