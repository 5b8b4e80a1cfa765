"""The accuracy–MAdds figure: frontiers, labels that never overlap, units on the axis, error bars, test size,
collapsed routing, and the table under it."""

from pathlib import Path
from typing import Any

import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.text import Text

from dynmm.report.html import write_report
from dynmm.report.labels import LABEL_GID
from dynmm.report.pareto import frontier, pareto_figure, pareto_table
from dynmm.report.schema import _Oracle, _Pareto


def pareto(**extra: Any) -> _Pareto:
    base: dict[str, Any] = {
        "experts": [{"name": "text", "madds": 2.0e6, "metric": 0.74}, {"name": "late", "madds": 6.0e6, "metric": 0.78}],
        "baselines": [{"name": "tensor fusion", "madds": 9.0e6, "metric": 0.77}],
        "dynmm": [
            {"label": "λ=0.01", "madds": 3.5e6, "metric": 0.775},
            {"label": "λ=0.1", "madds": 4.0e6, "metric": 0.76},  # dominated by λ=0.01
        ],
    }
    return _Pareto.model_validate(base | extra)


def crowded() -> _Pareto:
    """Thirty baselines and ten dynamic points packed into a sliver of the plot."""
    baselines = [{"name": f"static fusion baseline {i}", "madds": 4.0e7 + i * 1.0e5, "metric": 0.80} for i in range(30)]
    dynmm = [{"label": f"λ={i / 100:g}", "madds": 4.0e7 + i * 2.0e5, "metric": 0.80 + i / 1000} for i in range(10)]
    return _Pareto.model_validate({"baselines": baselines, "dynmm": dynmm})


def labels(fig: Figure) -> list[Text]:
    (ax,) = fig.axes
    return [t for t in ax.texts if t.get_gid() == LABEL_GID]


def label_boxes(fig: Figure) -> list[Any]:
    fig.canvas.draw()  # type: ignore[attr-defined]
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    return [Text.get_window_extent(t, renderer) for t in labels(fig)]  # the text alone, not its leader line


def test_crowded_labels_never_overlap_and_stay_inside_the_axes() -> None:
    fig = pareto_figure(crowded(), "miou")
    boxes = label_boxes(fig)
    assert len(boxes) > 10  # many fit; the rest are only in the table
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    frame = fig.axes[0].get_window_extent()
    for box in boxes:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def test_placement_is_deterministic() -> None:
    first = [(t.get_text(), t.xyann) for t in labels(pareto_figure(crowded(), "miou"))]  # type: ignore[attr-defined]
    again = [(t.get_text(), t.xyann) for t in labels(pareto_figure(crowded(), "miou"))]  # type: ignore[attr-defined]
    assert first == again


def test_only_frontier_points_and_named_points_are_labelled() -> None:
    texts = {t.get_text() for t in labels(pareto_figure(pareto(), "acc2"))}
    assert texts == {"text", "late", "tensor fusion", "λ=0.01"}  # λ=0.1 is dominated: table only
    table = pareto_table(pareto(), "acc2")
    assert "<td>λ=0.1</td>" in table and "<td>frontier</td>" in table


def test_frontier_keeps_non_dominated_points_cheapest_first() -> None:
    points = [_Oracle(madds=m, metric=y) for m, y in [(3, 0.7), (1, 0.5), (2, 0.4), (4, 0.7), (5, 0.9)]]
    assert [(q.madds, q.metric) for q in frontier(points)] == [(1, 0.5), (3, 0.7), (5, 0.9)]


def test_series_frontiers_are_drawn_as_lines() -> None:
    (ax,) = pareto_figure(pareto(), "acc2").axes
    lines = [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines]
    assert ([2.0, 6.0], [0.74, 0.78]) in lines  # the experts' frontier, in M MAdds


@pytest.mark.parametrize(("scale", "prefix"), [(1.0e7, "M"), (1.0e4, "k"), (1.0e10, "G"), (1.0, "")])
def test_x_axis_carries_the_unit_and_no_offset_text(scale: float, prefix: str) -> None:
    points = [{"name": f"m{i}", "madds": scale * (4.2 + i / 100), "metric": 0.8 + i / 100} for i in range(3)]
    fig = pareto_figure(_Pareto.model_validate({"baselines": points}), "miou", unit="scene")
    fig.canvas.draw()  # type: ignore[attr-defined]
    (ax,) = fig.axes
    assert ax.get_xlabel() == f"{prefix} MAdds per scene".strip()
    assert ax.xaxis.get_offset_text().get_text() == ""
    assert ax.yaxis.get_offset_text().get_text() == ""


def test_standard_deviations_are_drawn_as_error_bars_and_tabled() -> None:
    p = pareto(dynmm=[{"label": "λ=0.01", "madds": 3.5e6, "metric": 0.775, "metric_std": 0.01, "madds_std": 1.0e5}])
    (ax,) = pareto_figure(p, "acc2").axes
    assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 1
    assert "0.775 ± 0.01" in pareto_table(p, "acc2") and "3,500,000 ± 100,000" in pareto_table(p, "acc2")
    (plain,) = pareto_figure(pareto(), "acc2").axes
    assert not any(isinstance(c, ErrorbarContainer) for c in plain.containers)


def test_test_rows_are_stated_in_title_and_caption() -> None:
    p = pareto(test_rows=174)
    (ax,) = pareto_figure(p, "acc2").axes
    assert "test split, 174 samples" in ax.get_title()
    assert "<caption>test split, 174 samples</caption>" in pareto_table(p, "acc2")
    assert "<caption>" not in pareto_table(pareto(), "acc2")


def test_collapsed_points_are_hollow_and_noted() -> None:
    p = pareto(dynmm=[{"label": "λ=1", "madds": 1.0e6, "metric": 0.6, "collapsed": True}])
    fig = pareto_figure(p, "acc2")
    (ax,) = fig.axes
    hollow = [c for c in ax.collections if len(c.get_offsets()) and len(c.get_facecolors()) == 0]
    assert len(hollow) == 1
    assert "hollow: routing collapsed\nonto one path" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert "<td>frontier, collapsed</td>" in pareto_table(p, "acc2")


def test_oracle_gain_share_gets_a_column_only_when_given() -> None:
    point = {
        "label": "λ=0.01",
        "madds": 3.5e6,
        "metric": 0.775,
        "oracle_gain_share": 0.4,
        "oracle_gain_share_std": 0.05,
    }
    table = pareto_table(pareto(dynmm=[point]), "acc2")
    assert "<th>oracle gain share</th>" in table and "<td>0.4 ± 0.05</td>" in table
    assert "oracle gain share" not in pareto_table(pareto(), "acc2")


def test_write_report_draws_the_new_keys(tmp_path: Path) -> None:
    data = {
        "metric": "acc2",
        "pareto": {
            "experts": [{"name": "text", "madds": 2.0e5, "metric": 0.74, "metric_std": 0.02}],
            "dynmm": [{"label": "λ=0", "madds": 3.0e5, "metric": 0.75, "collapsed": True, "madds_std": 1.0e4}],
            "test_rows": 686,
        },
    }
    page = write_report(tmp_path, data).read_text(encoding="utf-8")
    assert "test split, 686 samples" in page and "0.74 ± 0.02" in page and "collapsed" in page
