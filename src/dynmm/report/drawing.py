"""Helpers every report figure and table shares: a pyplot-free figure, atomic PNG saving, html tables, number
formats and the MAdds unit prefix of an axis.

Why: figures use `matplotlib.figure.Figure` with the Agg canvas directly (no pyplot, so no global figure
registry to leak into and nothing to close), and one dpi from creation to file, so text measured while drawing
(label placement) has the size it has in the PNG.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dynmm.io import atomic_write

DPI = 110
FONT_SIZE = 8
"""Points of the labels, legends and annotations drawn inside figures."""

_PREFIXES = (("G", 10**9), ("M", 10**6), ("k", 10**3))


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _madds(value: float) -> str:
    return f"{value:,.0f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], caption: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(c))}</td>" for c in row) + "</tr>\n" for row in rows)
    cap = f"<caption>{_esc(caption)}</caption>\n" if caption else ""
    return f"<table>\n{cap}<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def _figure(width: float = 7.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def _label(ax: Axes, text: str, x: float, y: float, color: str = "black") -> None:
    ax.annotate(text, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=FONT_SIZE, color=color)


def madds_scale(values: Iterable[float]) -> tuple[str, float]:
    """The SI prefix (k, M, G or none) and its factor for MAdds around the largest of `values`, so an axis reads
    "M MAdds per sample" with ticks 26 … 47 instead of a 1e7 multiplier."""
    top = max((abs(v) for v in values), default=0.0)
    return next(((prefix, float(factor)) for prefix, factor in _PREFIXES if top >= factor), ("", 1.0))


def madds_axis_label(prefix: str, unit: str) -> str:
    return f"{prefix} MAdds per {unit}".strip()


def plain_ticks(ax: Axes, axis: Literal["x", "y"]) -> None:
    """Tick labels carry the whole value: no offset ("+4.2e7") or multiplier text at the axis end."""
    scale = ax.get_xscale() if axis == "x" else ax.get_yscale()
    if scale == "linear":
        ax.ticklabel_format(axis=axis, useOffset=False, style="plain")
