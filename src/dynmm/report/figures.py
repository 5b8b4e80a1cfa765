"""The report's figures other than the Pareto plot, each with the table of the numbers it draws.

Each `draw_*` saves its figure to the path given and returns the html that goes under it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, ListedColormap
from matplotlib.patches import Patch

from dynmm.report.drawing import (
    FONT_SIZE,
    _esc,
    _figure,
    _label,
    _madds,
    _save,
    _table,
    madds_axis_label,
    madds_scale,
    plain_ticks,
)
from dynmm.report.schema import _Component, _Examples, _Histogram, _Robustness, _Routing, _Speed

CLASS_PALETTE = "tab20"
"""Colours of class maps; with more classes than it holds, evenly spaced colours of WIDE_PALETTE instead."""
WIDE_PALETTE = "turbo"
LEGEND_COLUMNS = 6
"""Entries per row of the class legend under example segmentations."""
HATCH_COLLAPSED = "//"


# ---------------------------------------------------------------- routing, histograms


def _stacked(ax: Axes, names: list[str], series: dict[str, list[int]]) -> None:
    """Bars per name, one stacked segment (and legend entry) per series."""
    bottom = [0] * len(names)
    for i, (label, heights) in enumerate(series.items()):
        ax.bar(names, heights, bottom=bottom, color=f"C{i}", label=label)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.legend(fontsize=FONT_SIZE)


def draw_routing(r: _Routing, path: Path, unit: str = "sample") -> str:
    unit = r.unit or unit
    fig = _figure(11.0 if r.per_class else 6.0, 4.0)
    axes = fig.subplots(1, 2 if r.per_class else 1, squeeze=False)[0]
    total = sum(r.counts)
    axes[0].bar(r.experts, r.counts, color=[f"C{i}" for i in range(len(r.experts))])
    axes[0].set(ylabel=f"{unit}s", title=f"routing ({total} {unit}s)")
    if r.per_class:
        groups = list(r.per_class)
        by_expert = {e: [r.per_class[g][i] for g in groups] for i, e in enumerate(r.experts)}
        _stacked(axes[1], groups, by_expert)
        axes[1].set(xlabel=r.group, ylabel=f"{unit}s", title=f"routing per {r.group}")
    _save(fig, path)

    share = [f"{100 * c / total:.1f}%" if total else "–" for c in r.counts]
    out = _table(["choice", f"{unit}s", "share"], zip(r.experts, r.counts, share, strict=True))
    if r.per_class:
        out += _table([r.group, *r.experts], ([c, *v] for c, v in r.per_class.items()))
    return out


def draw_histogram(h: _Histogram, path: Path, unit: str = "sample") -> str:
    """Counts per bin; then one panel per `stacked` entry with its groups stacked."""
    unit = h.unit or unit
    panels = 1 + len(h.stacked)
    fig = _figure(4.5 * panels + 1.0, 4.0)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    axes[0].bar(h.bins, h.counts, color="C0")
    axes[0].set(xlabel=h.xlabel, ylabel=f"{unit}s", title=f"{h.title} ({sum(h.counts)} {unit}s)")
    for ax, (panel, series) in zip(axes[1:], h.stacked.items(), strict=True):
        _stacked(ax, h.bins, series)
        ax.set(xlabel=h.xlabel, ylabel=f"{unit}s", title=f"by {panel}")
    _save(fig, path)
    rows = [["all", *h.counts]]
    rows += [[f"{panel}: {name}", *counts] for panel, series in h.stacked.items() for name, counts in series.items()]
    return _table([f"{unit}s", *(f"{h.xlabel} = {b}" for b in h.bins)], rows)


# ---------------------------------------------------------------- the cost of one skippable component


def _group_colours(c: _Component) -> dict[str, str]:
    groups = list(dict.fromkeys(b.group for b in c.bars))
    return {g: f"C{i}" for i, g in enumerate(groups)}


def _saving(c: _Component) -> float | None:
    """The subject's relative MAdds saving in the component vs the reference (None: no reference cost)."""
    bars = {b.name: b for b in c.bars}
    if c.subject is None or c.reference is None or bars[c.reference].madds == 0:
        return None
    return 1.0 - bars[c.subject].madds / bars[c.reference].madds


def _headline(c: _Component, metric: str) -> str:
    """'this run: 38 % fewer depth encoder MAdds than best static fusion (add), miou -0.004' or ''."""
    saving = _saving(c)
    if saving is None or c.subject is None or c.reference is None:
        return ""
    bars = {b.name: b for b in c.bars}
    change = bars[c.subject].metric - bars[c.reference].metric
    more = "fewer" if saving >= 0 else "more"
    return (
        f"{c.subject}: {abs(saving):.0%} {more} {c.name} MAdds than the {c.reference_kind} ({c.reference}), "
        f"{metric} {change:+.3f}"
    )


def draw_component(c: _Component, metric: str, path: Path, unit: str = "sample") -> str:
    """Horizontal bars of the component's MAdds per model, metric written at each bar, the whole component as
    a line; the subject's saving vs the reference in the title."""
    prefix, scale = madds_scale([*(b.madds for b in c.bars), *([c.full] if c.full is not None else [])])
    colours = _group_colours(c)
    fig = _figure(9.0, 1.5 + 0.35 * len(c.bars))
    ax = fig.add_subplot()
    names = [b.name for b in c.bars]
    bars = ax.barh(
        names,
        [b.madds / scale for b in c.bars],
        color=[colours[b.group] for b in c.bars],
        hatch=[HATCH_COLLAPSED if b.collapsed else "" for b in c.bars],
        edgecolor=["black" if b.name == c.subject else "none" for b in c.bars],
    )
    ax.bar_label(bars, labels=[f"{metric} {b.metric:.3f}" for b in c.bars], padding=3, fontsize=FONT_SIZE)
    if c.full is not None:
        ax.axvline(c.full / scale, color="black", linestyle=":", label=f"whole {c.name}")
    ax.invert_yaxis()  # first bar on top
    ax.margins(x=0.2)
    ax.set(xlabel=f"{madds_axis_label(prefix, unit)} in the {c.name}")
    ax.set_title(_headline(c, metric) or f"{c.name} MAdds per {unit}", fontsize=FONT_SIZE + 1)
    plain_ticks(ax, "x")
    handles = [Patch(color=colour, label=group) for group, colour in colours.items()]
    if any(b.collapsed for b in c.bars):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch=HATCH_COLLAPSED, label="routing collapsed"))
    ax.legend(handles=[*handles, *ax.get_legend_handles_labels()[0]], fontsize=FONT_SIZE, loc="lower right")
    _save(fig, path)
    return _component_table(c, metric, unit)


def _component_table(c: _Component, metric: str, unit: str) -> str:
    bars = {b.name: b for b in c.bars}
    reference = bars[c.reference].madds if c.reference is not None else 0.0
    rows = [
        (
            b.group,
            b.name,
            _madds(b.madds),
            f"{b.madds / c.full:.1%}" if c.full else "–",
            f"{1.0 - b.madds / reference:.1%}" if reference else "–",
            b.metric,
            "collapsed" if b.collapsed else "",
        )
        for b in c.bars
    ]
    versus = f"saving vs {c.reference}" if c.reference is not None else "saving"
    header = ["kind", "name", f"{c.name} MAdds / {unit}", f"share of whole {c.name}", versus, metric, "note"]
    headline = _headline(c, metric)
    return (f"<p>{_esc(headline)}</p>\n" if headline else "") + _table(header, rows)


# ---------------------------------------------------------------- speed, robustness


def draw_speed(rows: list[_Speed], path: Path) -> str:
    fig = _figure(5.5, 5.0)
    ax = fig.add_subplot()
    values = [v for s in rows for v in (s.predicted_speedup, s.realized_speedup)]
    lo, hi = min(values + [1.0]) * 0.9, max(values + [1.0]) * 1.1
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="realized = predicted")
    for s in rows:
        ax.scatter([s.predicted_speedup], [s.realized_speedup], zorder=3)
        _label(ax, f"{s.label}, bs={s.batch_size}", s.predicted_speedup, s.realized_speedup)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="predicted speedup (MAdds)", ylabel="realized speedup (wall clock)")
    ax.set_aspect("equal")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=FONT_SIZE)
    _save(fig, path)
    table_rows = [
        (
            s.label,
            s.batch_size,
            s.predicted_speedup,
            s.realized_speedup,
            s.realized_speedup / s.predicted_speedup if s.predicted_speedup else "–",
        )
        for s in rows
    ]
    return _table(["routing", "batch size", "predicted", "realized", "realized / predicted"], table_rows)


def draw_robustness(r: _Robustness, metric: str, path: Path) -> str:
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    for name, ys in r.curves.items():
        ax.plot(r.levels, ys, "-o", markersize=3, label=name)
    ax.set(xlabel=r.xlabel, ylabel=metric, title=r.title)
    ax.grid(True, alpha=0.3)
    if r.curves:
        ax.legend(fontsize=FONT_SIZE)
    _save(fig, path)
    rows = ([name, *ys] for name, ys in r.curves.items())
    return _table(["model", *(f"{r.xlabel} = {x:g}" for x in r.levels)], rows)


# ---------------------------------------------------------------- examples


def class_colours(count: int) -> Colormap:
    """One colour per class 0..count-1 (values past the last take the last colour); the colours of the
    default palette while it has enough."""
    from matplotlib import colormaps

    palette = colormaps[CLASS_PALETTE]
    if isinstance(palette, ListedColormap) and count <= palette.N:
        return ListedColormap(palette.colors[:count])  # type: ignore[index]
    return colormaps[WIDE_PALETTE].resampled(count)


def _class_count(e: _Examples) -> int:
    """Colours the class maps use: one per named class, else as many as the default palette has (the colours
    every report used before class names)."""
    from matplotlib import colormaps

    return len(e.class_names) or colormaps[CLASS_PALETTE].N


def draw_examples(e: _Examples, path: Path) -> str:
    """One row of panels per example, titled by its label; a legend of the class colours when names are given."""
    columns = max(len(row.panels) for row in e.rows)
    count = _class_count(e)
    colours = class_colours(count)
    fig = _figure(2.6 * columns, 2.4 * len(e.rows) + (0.6 if e.class_names else 0.0))
    for sub, row in zip(fig.subfigures(len(e.rows), 1, squeeze=False)[:, 0], e.rows, strict=True):
        sub.suptitle(row.label, fontsize=FONT_SIZE + 1)
        for ax, column in zip(sub.subplots(1, columns, squeeze=False)[0], range(columns), strict=True):
            ax.set_axis_off()
            if column >= len(row.panels):
                continue
            name, image = list(row.panels.items())[column]
            if image.ndim == 3:
                ax.imshow(np.clip(image, 0, 1))
            elif image.dtype.kind in "iu":
                ax.imshow(image, cmap=colours, vmin=-0.5, vmax=count - 0.5, interpolation="nearest")
            else:
                ax.imshow(image, cmap="viridis")
            ax.set_title(name, fontsize=FONT_SIZE)
    if e.class_names:
        patches = [Patch(color=colours(i), label=name) for i, name in enumerate(e.class_names)]
        ncols = min(len(patches), LEGEND_COLUMNS)
        fig.legend(handles=patches, loc="outside lower center", ncols=ncols, fontsize=FONT_SIZE, title="classes")
    _save(fig, path)
    if not e.class_names:
        return ""
    return _table(["class", "name"], enumerate(e.class_names))
