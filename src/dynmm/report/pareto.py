"""The accuracy–MAdds figure of a report and the table of its numbers.

Why: the figure answers "what does each model buy for its compute?", so each series (experts, static-fusion
baselines, the dynamic models) is drawn with its frontier — the line through its non-dominated points — and
only frontier points and named experts/baselines are labelled, where labels fit without overlapping; every
point, labelled or not, is a row of the table. Spread over seeds is drawn as error bars, a model whose routing
collapsed onto one path as a hollow marker, and the x axis carries its unit (k/M/G MAdds per sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter

from dynmm.report.drawing import (
    FONT_SIZE,
    _esc,
    _figure,
    _madds,
    _save,
    _table,
    madds_axis_label,
    madds_scale,
    plain_ticks,
)
from dynmm.report.labels import Label, line_boxes, place_labels, point_boxes
from dynmm.report.schema import _Labelled, _Measured, _Oracle, _Pareto

TABLE_CURVE_ROWS = 12
"""Curves can hold thousands of points (the oracle frontier has one per upgraded sample): tables and labels show
an evenly spaced selection, ends included; the figure draws them all."""
BETA_LABELS = 5
"""β-curve frontier points labelled at most (evenly spaced, ends included)."""
LOG_RANGE = 10
"""MAdds spanning more than this ratio are drawn on a log axis."""
BETA_COLOUR, ORACLE_COLOUR = "C0", "C1"
EXPERT_MARKERS = "osD^vP*Xh"
EXPERT_COLOURS = ("C2", "C4", "C5", "C8", "C9", "C6")
"""Colours of the experts: none of the β curve's and oracle's, red (the dynamic models) or grey (static fusion)."""
MARKER_AREA = {"expert": 50.0, "baseline": 30.0, "dynmm": 120.0}
"""Scatter marker areas (points²) per series kind."""


T = TypeVar("T")
P = TypeVar("P", bound=_Oracle)


def _thin(points: list[T], keep: int) -> list[T]:
    if len(points) <= keep:
        return points
    step = (len(points) - 1) / (keep - 1)
    return [points[round(i * step)] for i in range(keep)]


def frontier(points: Sequence[P]) -> list[P]:
    """The non-dominated points (no other point costs at most as much and scores at least as well, one of
    them strictly), cheapest first."""
    best = float("-inf")
    kept = []
    for p in sorted(points, key=lambda q: (q.madds, -q.metric)):
        if p.metric > best:
            kept.append(p)
            best = p.metric
    return kept


@dataclass
class _Series:
    """One kind of point drawn alike: its table kind, colour and marker, legend entry, and whether every point is
    named (experts, baselines) or only its frontier points. Experts differ point by point (`each`)."""

    kind: str
    points: Sequence[_Measured]
    color: str
    marker: str
    area: float
    legend: str | None
    named: bool
    each: bool = False

    def style(self, i: int) -> tuple[str, str, str | None]:
        """Colour, marker and legend entry of point i (the series' entry on its first point only)."""
        if self.each:
            colors, markers = EXPERT_COLOURS, EXPERT_MARKERS
            return colors[i % len(colors)], markers[i % len(markers)], self.points[i].point[0]
        return self.color, self.marker, self.legend if i == 0 else None


def _series(p: _Pareto, method: str) -> list[_Series]:
    """Experts, static-fusion baselines and the dynamic models, in that order."""
    return [
        _Series("expert", p.experts, "black", "o", MARKER_AREA["expert"], None, True, each=True),
        _Series("static fusion", p.baselines, "dimgrey", "o", MARKER_AREA["baseline"], "static fusion", True),
        _Series(method, p.dynmm, "crimson", "*", MARKER_AREA["dynmm"], method, False),
    ]


def _scatter(ax: Axes, s: _Series, scale: float) -> None:
    """Each point (hollow when collapsed) with its error bars, then the series' frontier line."""
    for i, q in enumerate(s.points):
        color, marker, legend = s.style(i)
        x, y = q.madds / scale, q.metric
        face = "none" if q.collapsed else color
        ax.scatter([x], [y], marker=marker, s=s.area, facecolors=face, edgecolors=color, zorder=3)
        if legend is not None:  # a filled legend entry, even when this point is drawn hollow
            ax.scatter([], [], marker=marker, s=s.area, color=color, label=legend)
        if q.metric_std is not None or q.madds_std is not None:
            xerr = None if q.madds_std is None else [q.madds_std / scale]
            ax.errorbar([x], [y], xerr=xerr, yerr=q.metric_std, fmt="none", ecolor=color, elinewidth=1, capsize=2)
    line = frontier(s.points)
    if len(line) > 1:
        ax.plot([q.madds / scale for q in line], [q.metric for q in line], color=s.color, linewidth=1, zorder=2)


def _curves(ax: Axes, p: _Pareto, scale: float) -> None:
    """The β curve and the oracle frontier as lines, and the budget."""
    curves = (
        (p.beta_curve, "-o", BETA_COLOUR, "β sweep (one model)"),
        (p.oracle, "--", ORACLE_COLOUR, "oracle routing"),
    )
    for points, style, color, label in curves:
        if points:
            line = sorted(points, key=lambda q: q.madds)
            xs, ys = [q.madds / scale for q in line], [q.metric for q in line]
            ax.plot(xs, ys, style, color=color, markersize=3, label=label)
    if p.budget is not None:
        ax.axvline(p.budget / scale, color="black", linestyle=":", label=f"budget {_madds(p.budget)}")


def _labels(p: _Pareto, series: list[_Series], scale: float) -> list[Label]:
    """In the order they are placed (first placed, nearest its point): the dynamic models' frontier points, the
    named experts and baselines, then frontier points of the β curve."""
    labels = []
    experts, baselines, dynmm = series
    for s in (dynmm, experts, baselines):
        on_line = {id(q) for q in frontier(s.points)}
        for i, q in enumerate(s.points):
            if s.named or id(q) in on_line:
                labels.append(Label(q.point[0], q.madds / scale, q.metric, s.style(i)[0]))
    beta = _thin(frontier(p.beta_curve), BETA_LABELS)
    return labels + [Label(q.point[0], q.madds / scale, q.metric, BETA_COLOUR) for q in beta]


def _style_axes(ax: Axes, p: _Pareto, xs: list[float], prefix: str, metric: str, unit: str) -> None:
    """Log x when the costs span decades (all positive), unit on the x label, test-set size in the title."""
    if min(xs) > 0 and max(xs) / min(xs) > LOG_RANGE:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(LogFormatter())
        ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    rows = f" · test split, {p.test_rows} {unit}s" if p.test_rows is not None else ""
    ax.set(xlabel=madds_axis_label(prefix, unit), ylabel=metric, title=f"{metric} vs compute{rows}")
    plain_ticks(ax, "x")
    plain_ticks(ax, "y")
    ax.grid(True, alpha=0.3)


def _legend(fig: Figure, ax: Axes, p: _Pareto) -> None:
    handles, names = ax.get_legend_handles_labels()
    if any(q.collapsed for q in (*p.experts, *p.baselines, *p.dynmm)):
        handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="black"))
        names.append("hollow: routing collapsed\nonto one path")
    handles.append(Line2D([], [], color="black", linewidth=1))
    names.append("frontier of a series")
    fig.legend(handles, names, loc="outside right upper", fontsize=FONT_SIZE)


def pareto_figure(p: _Pareto, metric: str, method: str = "DynMM", unit: str = "sample") -> Figure:
    """The figure, labels placed: experts, baselines and dynamic models with frontiers, β curve, oracle."""
    groups: list[Sequence[_Oracle]] = [p.experts, p.baselines, p.dynmm, p.beta_curve, p.oracle]
    xs = [q.madds for group in groups for q in group] + ([p.budget] if p.budget is not None else [])
    prefix, scale = madds_scale(xs)
    fig = _figure(8.5, 5.0)
    ax = fig.add_subplot()
    series = _series(p, method)
    for s in series:
        _scatter(ax, s, scale)
    _curves(ax, p, scale)
    _style_axes(ax, p, [x / scale for x in xs], prefix, metric, unit)
    _legend(fig, ax, p)
    fig.draw_without_rendering()  # settle the layout and limits before measuring labels against them
    ax.set(xlim=ax.get_xlim(), ylim=ax.get_ylim())
    points = [(q.madds / scale, q.metric) for s in series for q in s.points]
    markers = point_boxes(ax, points, max(MARKER_AREA.values()) ** 0.5)
    place_labels(ax, _labels(p, series, scale), markers, line_boxes(ax))
    return fig


def _spread(mean: float, std: float | None) -> str | float:
    """`mean ± std` when the spread over seeds is known, else the mean as the table shows numbers."""
    return mean if std is None else f"{mean:.4g} ± {std:.2g}"


def _madds_spread(mean: float, std: float | None) -> str:
    return _madds(mean) if std is None else f"{_madds(mean)} ± {_madds(std)}"


def _note(q: _Oracle, on_frontier: bool) -> str:
    notes = (["frontier"] if on_frontier else []) + (["collapsed"] if isinstance(q, _Measured) and q.collapsed else [])
    return ", ".join(notes)


def _gain(q: _Oracle) -> str | float:
    if not isinstance(q, _Labelled) or q.oracle_gain_share is None:
        return "–"
    return _spread(q.oracle_gain_share, q.oracle_gain_share_std)


def pareto_table(p: _Pareto, metric: str, method: str = "DynMM", unit: str = "sample") -> str:
    """Every point (curves thinned): kind, name, MAdds and metric (mean ± std over seeds where known), the
    oracle gain share where any model has one, and notes: on its series' frontier, routing collapsed."""
    groups: list[tuple[str, Sequence[_Oracle], bool]] = [
        ("expert", p.experts, True),
        ("static fusion", p.baselines, True),
        (method, p.dynmm, True),
        ("β sweep", _thin(list(p.beta_curve), TABLE_CURVE_ROWS), False),
        ("oracle", _thin(list(p.oracle), TABLE_CURVE_ROWS), False),
    ]
    gains = any(q.oracle_gain_share is not None for q in p.dynmm)
    rows = []
    for kind, points, noted in groups:
        best = {id(q) for q in frontier(points)} if noted else set()
        for q in points:
            std = q if isinstance(q, _Measured) else None
            madds = _madds_spread(q.madds, std.madds_std if std else None)
            value = _spread(q.metric, std.metric_std if std else None)
            rows.append((kind, q.point[0], madds, value, *([_gain(q)] if gains else []), _note(q, id(q) in best)))
    header = ["kind", "name", f"MAdds / {unit}", metric, *(["oracle gain share"] if gains else []), "note"]
    caption = f"test split, {p.test_rows} {unit}s" if p.test_rows is not None else ""
    return _table(header, rows, caption)


def draw_pareto(p: _Pareto, metric: str, path: Path, method: str = "DynMM", unit: str = "sample") -> str:
    """Save the figure to `path`; return the html under it: what the lines and labels mean, then the table."""
    _save(pareto_figure(p, metric, method, unit), path)
    note = (
        "<p>Lines join each series' non-dominated points (its frontier); labels name experts, baselines and "
        "frontier points where they fit. Every point is in the table.</p>\n"
    )
    budget = f"<p>MAdds budget: {_esc(_madds(p.budget))}</p>\n" if p.budget is not None else ""
    return note + pareto_table(p, metric, method, unit) + budget
