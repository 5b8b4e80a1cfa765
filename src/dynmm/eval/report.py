"""A self-contained HTML report (report.html + figures/*.png) of a dynamic multimodal fusion run.

Why: the numbers in metrics.json only tell a story next to each other — accuracy against measured MAdds, where
the router sent samples, whether a predicted speedup was realized. `write_report` draws those figures from one
plain dict, shows the numbers behind every figure as a table, and writes every file atomically so a report being
rewritten is never seen half-written.

The whole dict is validated before anything is written: a malformed section raises `DataError` naming the key at
fault (e.g. `pareto.experts[2].madds`), an absent section is simply left out. Unknown keys are errors too, so a
misspelled section is not silently dropped. Figures use `matplotlib.figure.Figure` with the Agg canvas directly:
no pyplot, so no global figure registry to leak into and nothing to close.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dynmm.errors import DataError
from dynmm.io import atomic_write

_TOP_KEYS = {"title", "metric", "method", "unit", "summary", "pareto", "routing", "speed", "robustness", "examples"}
_PARETO_KEYS = {"experts", "baselines", "dynmm", "beta_curve", "oracle", "budget"}
_FIGURE_NAMES = ("pareto.png", "routing.png", "speed.png", "examples.png")

Point = tuple[str, float, float]  # (name, madds, metric)


# ---------------------------------------------------------------- validation


def _fail(key: str, expected: str, got: Any) -> DataError:
    return DataError(f"report data: {key} must be {expected}, got {got!r:.80}")


def _mapping(value: Any, key: str, allowed: set[str], required: Iterable[str] = ()) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(key, "a mapping", value)
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise DataError(f"report data: {key} has unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    for name in required:
        if name not in value:
            raise DataError(f"report data: {key}.{name} is missing" if key else f"report data: {name} is missing")
    return value


def _list(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise _fail(key, "a list", value)
    return list(value)


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise _fail(key, "a string", value)
    return value


def _num(value: Any, key: str, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(key, "a finite number", value)
    if minimum is not None and value < minimum:
        raise _fail(key, f">= {minimum:g}", value)
    return float(value)


def _count(value: Any, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(key, f"an integer >= {minimum}", value)
    return value


def _points(value: Any, key: str, name_field: str | None) -> list[Point]:
    """Entries {name_field, madds, metric}; a `beta` name is numeric and shown as "β=…"."""
    fields = {"madds", "metric"} | ({name_field} if name_field else set())
    points = []
    for i, entry in enumerate(_list(value, key)):
        at = f"{key}[{i}]"
        entry = _mapping(entry, at, fields, sorted(fields))
        if name_field == "beta":
            name = f"β={_num(entry['beta'], f'{at}.beta'):g}"
        else:
            name = _str(entry[name_field], f"{at}.{name_field}") if name_field else ""
        points.append((name, _num(entry["madds"], f"{at}.madds", 0.0), _num(entry["metric"], f"{at}.metric")))
    return points


@dataclass
class _Pareto:
    experts: list[Point]
    baselines: list[Point]
    dynmm: list[Point]
    beta_curve: list[Point]
    oracle: list[Point]
    budget: float | None


@dataclass
class _Routing:
    experts: list[str]
    counts: list[int]
    per_class: dict[str, list[int]]
    unit: str | None = None


@dataclass
class _Speed:
    label: str
    batch_size: int
    predicted: float
    realized: float


@dataclass
class _Robustness:
    title: str
    xlabel: str
    levels: list[float]
    curves: dict[str, list[float]]


def _pareto(value: Any) -> _Pareto:
    p = _mapping(value, "pareto", _PARETO_KEYS)
    budget = p.get("budget")
    return _Pareto(
        experts=_points(p.get("experts", []), "pareto.experts", "name"),
        baselines=_points(p.get("baselines", []), "pareto.baselines", "name"),
        dynmm=_points(p.get("dynmm", []), "pareto.dynmm", "label"),
        beta_curve=_points(p.get("beta_curve", []), "pareto.beta_curve", "beta"),
        oracle=_points(p.get("oracle", []), "pareto.oracle", None),
        budget=None if budget is None else _num(budget, "pareto.budget", 0.0),
    )


def _routing(value: Any) -> _Routing:
    r = _mapping(value, "routing", {"experts", "counts", "per_class", "unit"}, ["experts", "counts"])
    experts = [_str(e, f"routing.experts[{i}]") for i, e in enumerate(_list(r["experts"], "routing.experts"))]
    if not experts:
        raise _fail("routing.experts", "a non-empty list", r["experts"])

    def counts(v: Any, key: str) -> list[int]:
        out = [_count(c, f"{key}[{i}]") for i, c in enumerate(_list(v, key))]
        if len(out) != len(experts):
            raise DataError(f"report data: {key} has {len(out)} entries but routing.experts has {len(experts)}")
        return out

    per_class_raw = r.get("per_class", {})
    if not isinstance(per_class_raw, Mapping):
        raise _fail("routing.per_class", "a mapping of class label -> counts", per_class_raw)
    per_class: dict[str, list[int]] = {}
    for c, v in per_class_raw.items():
        if isinstance(c, bool) or not isinstance(c, str | int):
            raise _fail(f"routing.per_class[{c!r}]", "keyed by a class label (string or integer)", c)
        per_class[str(c)] = counts(v, f"routing.per_class[{c!r}]")
    unit = _str(r["unit"], "routing.unit") if "unit" in r else None
    return _Routing(experts, counts(r["counts"], "routing.counts"), per_class, unit)


def _speed(value: Any) -> list[_Speed]:
    fields = {"label", "batch_size", "predicted_speedup", "realized_speedup"}
    rows = []
    for i, entry in enumerate(_list(value, "speed")):
        at = f"speed[{i}]"
        e = _mapping(entry, at, fields, sorted(fields))
        batch_size = _count(e["batch_size"], f"{at}.batch_size", 1)
        rows.append(
            _Speed(
                label=_str(e["label"], f"{at}.label"),
                batch_size=batch_size,
                predicted=_num(e["predicted_speedup"], f"{at}.predicted_speedup", 0.0),
                realized=_num(e["realized_speedup"], f"{at}.realized_speedup", 0.0),
            )
        )
    return rows


def _robustness(value: Any) -> list[_Robustness]:
    fields = {"title", "xlabel", "levels", "curves"}
    out = []
    for i, entry in enumerate(_list(value, "robustness")):
        at = f"robustness[{i}]"
        e = _mapping(entry, at, fields, ["levels", "curves"])
        levels = [_num(x, f"{at}.levels[{j}]") for j, x in enumerate(_list(e["levels"], f"{at}.levels"))]
        if not isinstance(e["curves"], Mapping):
            raise _fail(f"{at}.curves", "a mapping of model name -> values", e["curves"])
        curves: dict[str, list[float]] = {}
        for name, ys in e["curves"].items():
            key = f"{at}.curves[{name!r}]"
            curves[_str(name, f"{at}.curves (model name)")] = [
                _num(y, f"{key}[{j}]") for j, y in enumerate(_list(ys, key))
            ]
            if len(curves[name]) != len(levels):
                raise DataError(f"report data: {key} has {len(curves[name])} values but {at}.levels has {len(levels)}")
        title = _str(e.get("title", f"Robustness {i}"), f"{at}.title")
        out.append(_Robustness(title, _str(e.get("xlabel", "corruption level"), f"{at}.xlabel"), levels, curves))
    return out


# ---------------------------------------------------------------- figures and html


@dataclass
class _Examples:
    title: str
    rows: list[tuple[str, dict[str, np.ndarray]]]


def _examples(value: Any) -> _Examples:
    """{"title", "rows": [{"label", "panels": {name: (H, W) or (H, W, 3) array}}]}; integer 2-D panels are
    drawn as class maps (one colour per class), float ones as heat maps, 3-channel ones as images."""
    entry = _mapping(value, "examples", {"title", "rows"}, ("rows",))
    rows = []
    for i, row in enumerate(_list(entry["rows"], "examples.rows")):
        at = f"examples.rows[{i}]"
        row = _mapping(row, at, {"label", "panels"}, ("panels",))
        panels = {}
        for name, array in _mapping(row["panels"], f"{at}.panels", set(row["panels"])).items():
            image = np.asarray(array)
            shaped = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
            if not shaped or image.dtype.kind not in "iuf" or not np.isfinite(image).all():
                raise _fail(f"{at}.panels.{name}", "a finite (H, W) or (H, W, 3) array", image.shape)
            panels[str(name)] = image
        rows.append((_str(row.get("label", f"example {i}"), f"{at}.label"), panels))
    return _Examples(_str(entry.get("title", "Examples"), "examples.title"), rows)


def _draw_examples(e: _Examples, path: Path) -> str:
    columns = max(len(panels) for _, panels in e.rows)
    fig = _figure(2.6 * columns, 2.2 * len(e.rows))
    axes = fig.subplots(len(e.rows), columns, squeeze=False)
    for r, (label, panels) in enumerate(e.rows):
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
    fig = _figure()
    ax = fig.add_subplot()
    markers = "osD^vP*Xh"
    for i, (name, x, y) in enumerate(p.experts):
        ax.scatter([x], [y], marker=markers[i % len(markers)], s=50, zorder=3, label=name)
        _label(ax, name, x, y)
    for j, (name, x, y) in enumerate(p.baselines):
        ax.scatter([x], [y], marker="o", s=30, color="grey", zorder=2, label="static fusion" if j == 0 else None)
        _label(ax, name, x, y, color="dimgrey")
    for j, (name, x, y) in enumerate(p.dynmm):
        ax.scatter([x], [y], marker="*", s=120, color="crimson", zorder=4, label=method if j == 0 else None)
        _label(ax, name, x, y, color="crimson")
    for points, style, label in ((p.beta_curve, "-o", "β sweep (one model)"), (p.oracle, "--", "oracle routing")):
        if points:
            line = sorted(points, key=lambda q: q[1])
            ax.plot([q[1] for q in line], [q[2] for q in line], style, markersize=3, label=label, zorder=1)
    for name, x, y in _thin(p.beta_curve, 5):
        _label(ax, name, x, y, color="grey")
    if p.budget is not None:
        ax.axvline(p.budget, color="black", linestyle=":", label=f"budget {_madds(p.budget)}")
    xs = [q[1] for group in (p.experts, p.baselines, p.dynmm, p.beta_curve, p.oracle) for q in group]
    xs += [p.budget] if p.budget is not None else []
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    ax.set(xlabel=f"mean MAdds per {unit}", ylabel=metric, title=f"{metric} vs compute")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)

    groups = [("expert", p.experts), ("static fusion", p.baselines), (method, p.dynmm)]
    groups += [("β sweep", _thin(p.beta_curve, TABLE_CURVE_ROWS)), ("oracle", _thin(p.oracle, TABLE_CURVE_ROWS))]
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
    values = [v for s in rows for v in (s.predicted, s.realized)]
    lo, hi = min(values + [1.0]) * 0.9, max(values + [1.0]) * 1.1
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="realized = predicted")
    for s in rows:
        ax.scatter([s.predicted], [s.realized], zorder=3)
        _label(ax, f"{s.label}, bs={s.batch_size}", s.predicted, s.realized)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="predicted speedup (MAdds)", ylabel="realized speedup (wall clock)")
    ax.set_aspect("equal")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    table_rows = [
        (s.label, s.batch_size, s.predicted, s.realized, s.realized / s.predicted if s.predicted else "–") for s in rows
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
    data = dict(_mapping(data, "data", _TOP_KEYS))
    title = _str(data.get("title", "Dynamic multimodal fusion report"), "title")
    metric = _str(data.get("metric", "metric"), "metric")
    method = _str(data.get("method", "DynMM"), "method")
    unit = _str(data.get("unit", "sample"), "unit")
    summary = data.get("summary", {})
    if not isinstance(summary, Mapping):
        raise _fail("summary", "a mapping of name -> string or number", summary)
    for key, value in summary.items():
        if not isinstance(key, str) or not isinstance(value, str | int | float):
            raise _fail(f"summary[{key!r}]", "a string or number", value)
    pareto = _pareto(data["pareto"]) if "pareto" in data else None
    routing = _routing(data["routing"]) if "routing" in data else None
    speed = _speed(data["speed"]) if "speed" in data else []
    robustness = _robustness(data["robustness"]) if "robustness" in data else []
    examples = _examples(data["examples"]) if "examples" in data else None

    directory = Path(directory)
    figures = directory / "figures"
    written: set[str] = set()
    sections = []
    if summary:
        sections.append(_section("Summary", _table(["", "value"], summary.items())))
    if pareto and any((pareto.experts, pareto.baselines, pareto.dynmm, pareto.beta_curve, pareto.oracle)):
        body = _draw_pareto(pareto, metric, figures / "pareto.png", method, unit)
        sections.append(_section(f"{metric} vs MAdds", body, "pareto.png"))
        written.add("pareto.png")
    if routing:
        sections.append(_section("Routing", _draw_routing(routing, figures / "routing.png", unit), "routing.png"))
        written.add("routing.png")
    if speed:
        sections.append(
            _section("Predicted vs realized speedup", _draw_speed(speed, figures / "speed.png"), "speed.png")
        )
        written.add("speed.png")
    for i, rob in enumerate(robustness):
        name = f"robustness_{i}.png"
        sections.append(_section(rob.title, _draw_robustness(rob, metric, figures / name), name))
        written.add(name)
    if examples and examples.rows:
        sections.append(_section(examples.title, _draw_examples(examples, figures / "examples.png"), "examples.png"))
        written.add("examples.png")

    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n{''.join(sections)}</body>\n</html>\n"
    )
    out = atomic_write(directory / "report.html", lambda tmp: tmp.write_bytes(page.encode("utf-8")))
    if figures.is_dir():
        for stale in [*(figures / n for n in _FIGURE_NAMES), *figures.glob("robustness_*.png")]:
            if stale.name not in written:
                stale.unlink(missing_ok=True)
    return out
