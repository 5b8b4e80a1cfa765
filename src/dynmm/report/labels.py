"""Text labels beside plotted points that never overlap each other and never leave the axes.

Why: models of about the same cost crowd a Pareto plot, and matplotlib draws an annotation where it is told,
so names printed at a fixed offset pile up unreadably. `place_labels` places labels one at a time, in the
order given (most important first): it tries offsets around the point, nearest first, and keeps the first whose
text box (measured with the figure's renderer) is inside the axes and clear of every label placed so far
(and, on a first pass, of the plotted points); farther offsets get a leader line to their point. A label that
fits nowhere is left out (the table under the figure names every point anyway). The placement is
deterministic: the same figure always gets the same labels.

Call it after everything else is drawn and the layout settled (`Figure.draw_without_rendering`) with the axis
limits fixed, so positions measured here are where the labels end up in the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox

from dynmm.report.drawing import FONT_SIZE

LABEL_GID = "point-label"
"""gid of every placed label, so tests and callers can find them among a figure's texts."""

POINTS_PER_INCH = 72
_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1), (0, -1), (1, 0), (-1, 0))
"""Unit offsets tried around a point, right-above first (where a reader looks for a point's name)."""
_NEAR = 4.0
"""Offset (points) of a label next to its point, with no leader line."""
_LEADER_RADII = (14.0, 26.0, 40.0)
"""Farther offsets (points), tried when no near one is free; such labels get a leader line."""
_PAD = 2.0
"""Pixels kept clear around every label box."""
_LINE_STEP = 4.0
"""Pixels between the samples of a line that labels keep off."""
_HA = {1: "left", 0: "center", -1: "right"}
_VA = {1: "bottom", 0: "center", -1: "top"}


@dataclass(frozen=True)
class Label:
    """A label to place: its text, the point it names (data coordinates) and its colour."""

    text: str
    x: float
    y: float
    color: str = "black"


@dataclass(frozen=True)
class _Spot:
    """Where a label goes: its offset from the point in points, alignment, and whether it needs a leader."""

    dx: float
    dy: float
    ha: str
    va: str
    leader: bool


def _box(anchor: tuple[float, float], size: tuple[float, float], spot: _Spot, px_per_pt: float) -> Bbox:
    """The text box (pixels) a label of `size` gets at `spot` from `anchor`, as matplotlib aligns it."""
    x = anchor[0] + spot.dx * px_per_pt
    y = anchor[1] + spot.dy * px_per_pt
    width, height = size
    x0 = {"left": x, "center": x - width / 2, "right": x - width}[spot.ha]
    y0 = {"bottom": y, "center": y - height / 2, "top": y - height}[spot.va]
    return Bbox.from_bounds(x0, y0, width, height)


def _boxes(boxes: Iterable[Bbox]) -> np.ndarray:
    """Boxes as an (N, 4) array of x0, y0, x1, y1, so one candidate is checked against all at once."""
    return np.array([[b.x0, b.y0, b.x1, b.y1] for b in boxes], dtype=float).reshape(-1, 4)


def _free(box: Bbox, frame: Bbox, taken: np.ndarray) -> bool:
    """Inside the axes and clear of every box in `taken`, by _PAD both."""
    g = box.padded(_PAD)
    if g.x0 < frame.x0 or g.x1 > frame.x1 or g.y0 < frame.y0 or g.y1 > frame.y1:
        return False
    hit = (g.x0 < taken[:, 2]) & (taken[:, 0] < g.x1) & (g.y0 < taken[:, 3]) & (taken[:, 1] < g.y1)
    return not bool(hit.any())


def _ring_spots() -> list[_Spot]:
    """Offsets around the point: the near ring first, then the leader-line rings."""
    rings = [(_NEAR, False), *((r, True) for r in _LEADER_RADII)]
    return [_Spot(dx * r, dy * r, _HA[dx], _VA[dy], leader) for r, leader in rings for dx, dy in _DIRECTIONS]


def _grid_spots(anchor: tuple[float, float], size: tuple[float, float], frame: Bbox, px_per_pt: float) -> list[_Spot]:
    """Every centre on a lattice over the axes (one label height apart), nearest to the point first: the last
    resort of a crowded plot, reached by a leader line."""
    width, height = size
    step = max(height, 1.0)
    columns = max(int((frame.width - width) / step), 0) + 1
    rows = max(int((frame.height - height) / step), 0) + 1
    centres = [
        (frame.x0 + width / 2 + i * step, frame.y0 + height / 2 + j * step) for i in range(columns) for j in range(rows)
    ]
    centres.sort(key=lambda c: ((c[0] - anchor[0]) ** 2 + (c[1] - anchor[1]) ** 2, c))
    return [
        _Spot((cx - anchor[0]) / px_per_pt, (cy - anchor[1]) / px_per_pt, "center", "center", True)
        for cx, cy in centres
    ]


@dataclass(frozen=True)
class _Around:
    """What a label is placed among, in pixels: the axes and the boxes of placed labels, points and lines."""

    frame: Bbox
    labels: np.ndarray
    points: np.ndarray
    lines: np.ndarray
    px_per_pt: float


def _choose(anchor: tuple[float, float], size: tuple[float, float], around: _Around) -> tuple[_Spot, Bbox] | None:
    """The first free spot, trying in turn: next to the point clear of labels, points and lines; clear of labels
    and points (a label may cross a line); anywhere on the axes by a leader line rather than hide a point; and
    failing all, the same clear of labels only."""
    rings, grid = _ring_spots(), _grid_spots(anchor, size, around.frame, around.px_per_pt)
    solid = np.concatenate([around.labels, around.points])
    passes = (
        (rings, np.concatenate([solid, around.lines])),
        (rings, solid),
        (grid, solid),
        (rings, around.labels),
        (grid, around.labels),
    )
    for spots, taken in passes:
        for spot in spots:
            box = _box(anchor, size, spot, around.px_per_pt)
            if _free(box, around.frame, taken):
                return spot, box
    return None


def point_boxes(ax: Axes, xy: Iterable[tuple[float, float]], marker_pt: float) -> list[Bbox]:
    """Pixel squares of side `marker_pt` (points) around plotted points, which labels should not cover."""
    half = marker_pt * ax.figure.dpi / POINTS_PER_INCH / 2
    return [Bbox.from_extents(x - half, y - half, x + half, y + half) for x, y in ax.transData.transform(list(xy))]


def line_boxes(ax: Axes) -> list[Bbox]:
    """Small pixel squares along every line of the axes (one _LINE_STEP apart), which labels should rather not
    cross."""
    boxes = []
    for line in ax.get_lines():
        xy = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
        for (x0, y0), (x1, y1) in zip(xy[:-1], xy[1:], strict=True):
            steps = max(int(np.hypot(x1 - x0, y1 - y0) / _LINE_STEP), 1)
            for t in np.linspace(0.0, 1.0, steps + 1):
                x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
                boxes.append(Bbox.from_extents(x - _PAD, y - _PAD, x + _PAD, y + _PAD))
    return boxes


def place_labels(
    ax: Axes, labels: Sequence[Label], points: Sequence[Bbox] = (), lines: Sequence[Bbox] = ()
) -> list[Annotation]:
    """Annotate `labels` in order, none overlapping another or leaving the axes, preferably clear of `points`
    and, less importantly, of `lines` (pixel boxes: `point_boxes`, `line_boxes`); return the annotations drawn
    (a label that fits nowhere is dropped)."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    frame = ax.get_window_extent(renderer)
    placed: list[Bbox] = []
    drawn = []
    for label in labels:
        probe = ax.annotate(label.text, (label.x, label.y), fontsize=FONT_SIZE, annotation_clip=False)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        x, y = ax.transData.transform((label.x, label.y))
        others = [box for box in points if not box.contains(x, y)]  # a label may touch its own point
        around = _Around(frame, _boxes(placed), _boxes(others), _boxes(lines), fig.dpi / POINTS_PER_INCH)
        choice = _choose((x, y), (extent.width, extent.height), around)
        if choice is None:
            continue
        spot, box = choice
        placed.append(box)
        drawn.append(_annotate(ax, label, spot))
    return drawn


def _annotate(ax: Axes, label: Label, spot: _Spot) -> Annotation:
    leader = {"arrowstyle": "-", "color": label.color, "linewidth": 0.6, "shrinkA": 0, "shrinkB": 2}
    annotation = ax.annotate(
        label.text,
        (label.x, label.y),
        xytext=(spot.dx, spot.dy),
        textcoords="offset points",
        ha=spot.ha,
        va=spot.va,
        fontsize=FONT_SIZE,
        color=label.color,
        annotation_clip=False,
        arrowprops=leader if spot.leader else None,
    )
    annotation.set_in_layout(False)  # the layout is settled; labels sit inside the axes
    annotation.set_gid(LABEL_GID)
    return annotation
