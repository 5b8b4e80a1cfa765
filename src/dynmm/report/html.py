"""A self-contained HTML report (report.html + figures/*.png) of a dynamic multimodal fusion run.

Why: the numbers in metrics.json only tell a story next to each other — accuracy against measured MAdds, what
skipping an encoder saved, where the router sent samples, whether a predicted speedup was realized.
`write_report` draws those figures from one plain dict, shows the numbers behind every figure as a table, and
writes every file atomically so a report being rewritten is never seen half-written.

The whole dict is validated first (`dynmm.report.schema`): a malformed section raises `DataError` naming the key
at fault (e.g. `pareto.experts[2].madds`), an absent section is simply left out. The figures are drawn by
`dynmm.report.pareto` (accuracy vs MAdds) and `dynmm.report.figures` (everything else).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dynmm.io import atomic_write
from dynmm.report.drawing import _esc, _figure, _madds, _save, _table
from dynmm.report.figures import (
    draw_component,
    draw_examples,
    draw_histogram,
    draw_robustness,
    draw_routing,
    draw_speed,
)
from dynmm.report.pareto import TABLE_CURVE_ROWS, draw_pareto
from dynmm.report.schema import _Count, _data_error, _Invalid, _NonNegative, _Number, _Report, _Text, validate_report

__all__ = [
    "TABLE_CURVE_ROWS",
    "write_report",
    # helpers other reports (the MFAS search's) draw with, so that every report looks alike
    "_CSS",
    "_Count",
    "_data_error",
    "_esc",
    "_figure",
    "_Invalid",
    "_madds",
    "_NonNegative",
    "_Number",
    "_save",
    "_section",
    "_table",
    "_Text",
]

_FIGURE_NAMES = ("component.png", "pareto.png", "routing.png", "speed.png", "examples.png")
_NUMBERED = ("robustness_*.png", "histogram_*.png")

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .3em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
section { margin-bottom: 2.5em; }
"""


def _section(heading: str, body: str, figure: str | None = None) -> str:
    img = f'<img src="figures/{_esc(figure)}" alt="{_esc(heading)}">\n' if figure else ""
    return f"<section>\n<h2>{_esc(heading)}</h2>\n{img}{body}</section>\n"


def _sections(report: _Report, figures: Path) -> list[tuple[str, str, str | None]]:
    """(heading, html, figure name or None) of every section present, drawing its figure into `figures`."""
    metric, unit = report.metric, report.unit
    out: list[tuple[str, str, str | None]] = []
    if report.summary:
        out.append(("Summary", _table(["", "value"], report.summary.items()), None))
    if report.component:
        body = draw_component(report.component, metric, figures / "component.png", unit)
        out.append((f"{report.component.name} MAdds per {unit}", body, "component.png"))
    p = report.pareto
    if p and any((p.experts, p.baselines, p.dynmm, p.beta_curve, p.oracle)):
        body = draw_pareto(p, metric, figures / "pareto.png", report.method, unit)
        out.append((f"{metric} vs MAdds", body, "pareto.png"))
    if report.routing:
        out.append(("Routing", draw_routing(report.routing, figures / "routing.png", unit), "routing.png"))
    for i, hist in enumerate(report.histograms):
        name = f"histogram_{i}.png"
        out.append((hist.title, draw_histogram(hist, figures / name, unit), name))
    if report.speed:
        out.append(("Predicted vs realized speedup", draw_speed(report.speed, figures / "speed.png"), "speed.png"))
    for i, rob in enumerate(report.robustness):
        name = f"robustness_{i}.png"
        out.append((rob.title, draw_robustness(rob, metric, figures / name), name))
    if report.examples and report.examples.rows:
        out.append((report.examples.title, draw_examples(report.examples, figures / "examples.png"), "examples.png"))
    return out


def write_report(directory: Path, data: dict[str, Any]) -> Path:
    """Write `directory/report.html` and its figures in `directory/figures/`; return the html path.

    Validates everything first, so malformed data (DataError naming the key) leaves any previous report untouched.
    Figures a previous report wrote but this one does not are removed, so the folder matches the html.
    """
    report = validate_report(data)
    directory = Path(directory)
    figures = directory / "figures"
    sections = _sections(report, figures)
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(report.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(report.title)}</h1>\n{''.join(_section(*s) for s in sections)}</body>\n</html>\n"
    )
    out = atomic_write(directory / "report.html", lambda tmp: tmp.write_bytes(page.encode("utf-8")))
    written = {figure for _, _, figure in sections if figure}
    if figures.is_dir():
        numbered = [path for pattern in _NUMBERED for path in figures.glob(pattern)]
        for stale in [*(figures / n for n in _FIGURE_NAMES), *numbered]:
            if stale.name not in written:
                stale.unlink(missing_ok=True)
    return out
