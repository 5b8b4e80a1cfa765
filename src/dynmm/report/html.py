"""A self-contained HTML report (report.html + figures/*.png) of a dynamic multimodal fusion run.

Why: the numbers in metrics.json only tell a story next to each other — accuracy against measured MAdds, where
the router sent samples, whether a predicted speedup was realized. `write_report` draws those figures from one
plain dict, shows the numbers behind every figure as a table, and writes every file atomically so a report being
rewritten is never seen half-written.

The whole dict is validated (pydantic models, `_Report` and below) before anything is written: a malformed
section raises `DataError` naming the key at fault (e.g. `pareto.experts[2].madds`), an absent section is simply
left out. Unknown keys are errors too, so a misspelled section is not silently dropped. Figures use
`matplotlib.figure.Figure` with the Agg canvas directly: no pyplot, so no global figure registry to leak into and
nothing to close.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Self

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, Strict, ValidationError, model_validator

from dynmm.errors import DataError
from dynmm.io import atomic_write

_FIGURE_NAMES = ("pareto.png", "routing.png", "speed.png", "examples.png")

Point = tuple[str, float, float]  # (name, madds, metric)


# ---------------------------------------------------------------- validation of write_report's data


class _Invalid(ValueError):
    """A check pydantic has no constraint for (lengths that must agree, array shapes), in `_data_error`'s words.

    `where` extends pydantic's loc, which stops at the model that ran the check, so the message can still name
    the entry at fault, e.g. `routing.per_class['pos']`. `expected` None says that entry is missing (a key another
    field asks for, e.g. one per modality).
    """

    def __init__(self, expected: str | None, got: Any, where: str = "") -> None:
        super().__init__(expected)
        self.expected, self.got, self.where = expected, got, where


def _scalar(value: Any) -> str | int | float:
    """A summary value: any string or number (bool and NaN included, as written), so one plain check."""
    if not isinstance(value, str | int | float):
        raise _Invalid("a string or number", value)
    return value


def _class_label(value: Any) -> str:
    """Class labels may be integers (not bools); the report shows them as text."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Invalid("a class label (string or integer)", value)
    return str(value)


def _panel(value: Any) -> np.ndarray:
    """An example panel: a finite (H, W) or (H, W, 3) array of numbers (any array-like)."""
    image = np.asarray(value)
    shaped = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    if not shaped or image.dtype.kind not in "iuf" or not np.isfinite(image).all():
        raise _Invalid("a finite (H, W) or (H, W, 3) array", image.shape)
    return image


# Strict: a string is not a number, a bool or a float is not a count; floats accept ints and come out as float.
_Text = Annotated[str, Strict()]
_Count = Annotated[int, Strict(), Field(ge=0)]
_Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
_NonNegative = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]


class _Model(BaseModel):
    """Unknown keys are refused, so a misspelled key is an error rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


class _Oracle(_Model):
    """A point of the oracle frontier: unnamed (one per upgraded sample)."""

    madds: _NonNegative
    metric: _Number

    @property
    def point(self) -> Point:
        return ("", self.madds, self.metric)


class _Named(_Oracle):
    """An expert or a static-fusion baseline."""

    name: _Text

    @property
    def point(self) -> Point:
        return (self.name, self.madds, self.metric)


class _Labelled(_Oracle):
    """A trained dynamic model."""

    label: _Text

    @property
    def point(self) -> Point:
        return (self.label, self.madds, self.metric)


class _Beta(_Oracle):
    """A point of one model's β sweep, shown as "β=…"."""

    beta: _Number

    @property
    def point(self) -> Point:
        return (f"β={self.beta:g}", self.madds, self.metric)


class _Pareto(_Model):
    experts: list[_Named] = []
    baselines: list[_Named] = []
    dynmm: list[_Labelled] = []
    beta_curve: list[_Beta] = []
    oracle: list[_Oracle] = []
    budget: _NonNegative | None = None


class _Routing(_Model):
    experts: list[_Text] = Field(min_length=1)
    counts: list[_Count]
    per_class: dict[Annotated[str, PlainValidator(_class_label)], list[_Count]] = {}
    unit: _Text = ""

    @model_validator(mode="after")
    def _one_count_per_expert(self) -> Self:
        """Counts are bars per expert: every list must match routing.experts, which no field constraint can say."""
        lists = [(".counts", self.counts), *((f".per_class[{c!r}]", v) for c, v in self.per_class.items())]
        for where, counts in lists:
            if len(counts) != len(self.experts):
                raise _Invalid(f"one count per routing.experts entry ({len(self.experts)})", counts, where)
        return self


class _Speed(_Model):
    label: _Text
    batch_size: Annotated[int, Strict(), Field(ge=1)]
    predicted_speedup: _NonNegative
    realized_speedup: _NonNegative


class _Robustness(_Model):
    title: _Text = ""  # default "Robustness {i}", set by _Report
    xlabel: _Text = "corruption level"
    levels: list[_Number]
    curves: dict[_Text, list[_Number]]

    @model_validator(mode="after")
    def _one_value_per_level(self) -> Self:
        """Each curve is drawn against the levels, so it needs one value per level."""
        for name, ys in self.curves.items():
            if len(ys) != len(self.levels):
                raise _Invalid(f"one value per level ({len(self.levels)})", ys, f".curves[{name!r}]")
        return self


class _ExampleRow(_Model):
    """Integer 2-D panels are drawn as class maps (one colour per class), float ones as heat maps, 3-channel ones
    as images."""

    label: _Text = ""  # default "example {i}", set by _Report
    panels: dict[_Text, Annotated[np.ndarray, PlainValidator(_panel)]]


class _Examples(_Model):
    title: _Text = "Examples"
    rows: list[_ExampleRow]


class _Report(_Model):
    title: _Text = "Dynamic multimodal fusion report"
    metric: _Text = "metric"
    method: _Text = "DynMM"
    unit: _Text = "sample"
    summary: dict[_Text, Annotated[str | int | float, PlainValidator(_scalar)]] = {}
    pareto: _Pareto | None = None
    routing: _Routing | None = None
    speed: list[_Speed] = []
    robustness: list[_Robustness] = []
    examples: _Examples | None = None

    @model_validator(mode="after")
    def _name_untitled_by_position(self) -> Self:
        """Untitled robustness figures and example rows are numbered, and only the list knows the number."""
        for i, rob in enumerate(self.robustness):
            if "title" not in rob.model_fields_set:
                rob.title = f"Robustness {i}"
        for i, row in enumerate(self.examples.rows if self.examples else []):
            if "label" not in row.model_fields_set:
                row.label = f"example {i}"
        return self


_EXPECTED = {
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "float_type": "a finite number",
    "finite_number": "a finite number",
    "greater_than_equal": ">= {ge:g}",
    "too_short": "a non-empty list",
}
"""pydantic error type -> what was expected, worded as the messages users (and tests) already know."""


def _data_error(error: ValidationError, root: str = "data") -> DataError:
    """pydantic's first error as one DataError line, `report data: <path> must be <expected>, got <value>`.

    loc ('a', 0, 'b') is named `a[0].b`, the document itself `root`. A dict key that is no identifier is quoted
    (`summary['test acc']`); pydantic's '[key]' marks a bad key itself.
    """
    e = error.errors()[0]
    path = ""
    for part in e["loc"]:
        if part == "[key]":
            path += " (key)"
        elif isinstance(part, str) and part.isidentifier():
            path += f".{part}"
        else:
            path += f"[{part!r}]"
    cause = e.get("ctx", {}).get("error")
    if isinstance(cause, _Invalid):
        path, expected, got = path + cause.where, cause.expected, cause.got
    else:
        template = _EXPECTED.get(e["type"])
        expected = template.format(**e.get("ctx", {})) if template else e["msg"].removeprefix("Input should be ")
        got = e["input"]
    path = path.removeprefix(".") or root
    if e["type"] == "missing" or expected is None:
        return DataError(f"report data: {path} is missing")
    if e["type"] == "extra_forbidden":
        return DataError(f"report data: {path} is not a known key (misspelled?), got {got!r:.80}")
    return DataError(f"report data: {path} must be {expected}, got {got!r:.80}")


# ---------------------------------------------------------------- figures and html


def _draw_examples(e: _Examples, path: Path) -> str:
    columns = max(len(row.panels) for row in e.rows)
    fig = _figure(2.6 * columns, 2.2 * len(e.rows))
    axes = fig.subplots(len(e.rows), columns, squeeze=False)
    for r, row in enumerate(e.rows):
        label, panels = row.label, row.panels
        for c, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if c >= len(panels):
                continue
            name, image = list(panels.items())[c]
            if image.ndim == 3:
                ax.imshow(np.clip(image, 0, 1))
            elif image.dtype.kind in "iu":
                ax.imshow(image, cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
            else:
                ax.imshow(image, cmap="viridis")
            ax.set_title(f"{label} · {name}" if c == 0 else name, fontsize=8)
    _save(fig, path)
    return ""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _madds(value: float) -> str:
    return f"{value:,.0f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(c))}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def _figure(width: float = 7.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def _label(ax: Axes, text: str, x: float, y: float, color: str = "black") -> None:
    ax.annotate(text, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8, color=color)


TABLE_CURVE_ROWS = 12
"""Curves can hold thousands of points (the oracle frontier has one per upgraded sample): tables and labels show
an evenly spaced selection, ends included; the figure draws them all."""


def _thin(points: list[tuple[str, float, float]], keep: int) -> list[tuple[str, float, float]]:
    if len(points) <= keep:
        return points
    step = (len(points) - 1) / (keep - 1)
    return [points[round(i * step)] for i in range(keep)]


def _draw_pareto(p: _Pareto, metric: str, path: Path, method: str = "DynMM", unit: str = "sample") -> str:
    experts, baselines, dynmm, beta_curve, oracle = (
        [q.point for q in group] for group in (p.experts, p.baselines, p.dynmm, p.beta_curve, p.oracle)
    )
    fig = _figure()
    ax = fig.add_subplot()
    markers = "osD^vP*Xh"
    for i, (name, x, y) in enumerate(experts):
        ax.scatter([x], [y], marker=markers[i % len(markers)], s=50, zorder=3, label=name)
        _label(ax, name, x, y)
    for j, (name, x, y) in enumerate(baselines):
        ax.scatter([x], [y], marker="o", s=30, color="grey", zorder=2, label="static fusion" if j == 0 else None)
        _label(ax, name, x, y, color="dimgrey")
    for j, (name, x, y) in enumerate(dynmm):
        ax.scatter([x], [y], marker="*", s=120, color="crimson", zorder=4, label=method if j == 0 else None)
        _label(ax, name, x, y, color="crimson")
    for points, style, label in ((beta_curve, "-o", "β sweep (one model)"), (oracle, "--", "oracle routing")):
        if points:
            line = sorted(points, key=lambda q: q[1])
            ax.plot([q[1] for q in line], [q[2] for q in line], style, markersize=3, label=label, zorder=1)
    for name, x, y in _thin(beta_curve, 5):
        _label(ax, name, x, y, color="grey")
    if p.budget is not None:
        ax.axvline(p.budget, color="black", linestyle=":", label=f"budget {_madds(p.budget)}")
    xs = [q[1] for group in (experts, baselines, dynmm, beta_curve, oracle) for q in group]
    xs += [p.budget] if p.budget is not None else []
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    ax.set(xlabel=f"mean MAdds per {unit}", ylabel=metric, title=f"{metric} vs compute")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)

    groups = [("expert", experts), ("static fusion", baselines), (method, dynmm)]
    groups += [("β sweep", _thin(beta_curve, TABLE_CURVE_ROWS)), ("oracle", _thin(oracle, TABLE_CURVE_ROWS))]
    rows = [(group, name, _madds(x), y) for group, points in groups for name, x, y in points]
    budget = f"<p>MAdds budget: {_esc(_madds(p.budget))}</p>\n" if p.budget is not None else ""
    return _table(["kind", "name", f"MAdds / {unit}", metric], rows) + budget


def _draw_routing(r: _Routing, path: Path, unit: str = "sample") -> str:
    unit = r.unit or unit
    fig = _figure(11.0 if r.per_class else 6.0, 4.0)
    axes = fig.subplots(1, 2 if r.per_class else 1, squeeze=False)[0]
    total = sum(r.counts)
    axes[0].bar(r.experts, r.counts, color=[f"C{i}" for i in range(len(r.experts))])
    axes[0].set(ylabel=f"{unit}s", title=f"routing ({total} {unit}s)")
    if r.per_class:
        classes = list(r.per_class)
        bottom = [0] * len(classes)
        for i, expert in enumerate(r.experts):
            heights = [r.per_class[c][i] for c in classes]
            axes[1].bar(classes, heights, bottom=bottom, color=f"C{i}", label=expert)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        axes[1].set(xlabel="group", ylabel=f"{unit}s", title="routing per group")
        axes[1].legend(fontsize=8)
    _save(fig, path)

    share = [f"{100 * c / total:.1f}%" if total else "–" for c in r.counts]
    out = _table(["choice", f"{unit}s", "share"], zip(r.experts, r.counts, share, strict=True))
    if r.per_class:
        out += _table(["group", *r.experts], ([c, *v] for c, v in r.per_class.items()))
    return out


def _draw_speed(rows: list[_Speed], path: Path) -> str:
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
    ax.legend(fontsize=8)
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


def _draw_robustness(r: _Robustness, metric: str, path: Path) -> str:
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    for name, ys in r.curves.items():
        ax.plot(r.levels, ys, "-o", markersize=3, label=name)
    ax.set(xlabel=r.xlabel, ylabel=metric, title=r.title)
    ax.grid(True, alpha=0.3)
    if r.curves:
        ax.legend(fontsize=8)
    _save(fig, path)
    rows = ([name, *ys] for name, ys in r.curves.items())
    return _table(["model", *(f"{r.xlabel} = {x:g}" for x in r.levels)], rows)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .3em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
section { margin-bottom: 2.5em; }
"""


def _section(heading: str, body: str, figure: str | None = None) -> str:
    img = f'<img src="figures/{_esc(figure)}" alt="{_esc(heading)}">\n' if figure else ""
    return f"<section>\n<h2>{_esc(heading)}</h2>\n{img}{body}</section>\n"


def write_report(directory: Path, data: dict[str, Any]) -> Path:
    """Write `directory/report.html` and its figures in `directory/figures/`; return the html path.

    Validates everything first, so malformed data (DataError naming the key) leaves any previous report untouched.
    Figures a previous report wrote but this one does not are removed, so the folder matches the html.
    """
    try:
        report = _Report.model_validate(data)
    except ValidationError as error:
        raise _data_error(error) from error
    metric, pareto, routing, examples = report.metric, report.pareto, report.routing, report.examples

    directory = Path(directory)
    figures = directory / "figures"
    written: set[str] = set()
    sections = []
    if report.summary:
        sections.append(_section("Summary", _table(["", "value"], report.summary.items())))
    if pareto and any((pareto.experts, pareto.baselines, pareto.dynmm, pareto.beta_curve, pareto.oracle)):
        body = _draw_pareto(pareto, metric, figures / "pareto.png", report.method, report.unit)
        sections.append(_section(f"{metric} vs MAdds", body, "pareto.png"))
        written.add("pareto.png")
    if routing:
        sections.append(
            _section("Routing", _draw_routing(routing, figures / "routing.png", report.unit), "routing.png")
        )
        written.add("routing.png")
    if report.speed:
        sections.append(
            _section("Predicted vs realized speedup", _draw_speed(report.speed, figures / "speed.png"), "speed.png")
        )
        written.add("speed.png")
    for i, rob in enumerate(report.robustness):
        name = f"robustness_{i}.png"
        sections.append(_section(rob.title, _draw_robustness(rob, metric, figures / name), name))
        written.add(name)
    if examples and examples.rows:
        sections.append(_section(examples.title, _draw_examples(examples, figures / "examples.png"), "examples.png"))
        written.add("examples.png")

    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(report.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(report.title)}</h1>\n{''.join(sections)}</body>\n</html>\n"
    )
    out = atomic_write(directory / "report.html", lambda tmp: tmp.write_bytes(page.encode("utf-8")))
    if figures.is_dir():
        for stale in [*(figures / n for n in _FIGURE_NAMES), *figures.glob("robustness_*.png")]:
            if stale.name not in written:
                stale.unlink(missing_ok=True)
    return out
