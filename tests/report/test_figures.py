"""Report sections beyond the Pareto plot: the cost of a skippable component, histograms, class legends; and
that malformed new keys are refused with one-line errors naming them."""

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.patches import Rectangle

from dynmm.errors import DataError
from dynmm.report.figures import class_colours
from dynmm.report.html import write_report

NAMES = ["floor", "wall", "poster", "unlabeled"]


def component() -> dict[str, Any]:
    return {
        "name": "depth encoder",
        "full": 1.4e7,
        "subject": "this run",
        "reference": "weighted_add",
        "reference_kind": "best static fusion",
        "bars": [
            {"name": "identity", "group": "static fusion", "madds": 0.0, "metric": 0.62},
            {"name": "weighted_add", "group": "static fusion", "madds": 1.4e7, "metric": 0.84},
            {"name": "lambda_1", "group": "λ sweep", "madds": 2.4e6, "metric": 0.59, "collapsed": True},
            {"name": "this run", "group": "this run", "madds": 8.7e6, "metric": 0.857},
        ],
    }


def histogram() -> dict[str, Any]:
    return {
        "title": "depth stages run per scene",
        "xlabel": "depth stages run",
        "bins": ["0", "1", "2"],
        "counts": [3, 0, 5],
        "stacked": {"depth_pairs": {"flagged": [1, 0, 4], "not flagged": [2, 0, 1]}},
    }


def examples(class_names: list[str] | None = None) -> dict[str, Any]:
    label = np.arange(12, dtype=np.int64).reshape(3, 4) % len(NAMES)
    rows = [{"label": "scene 0 (add, identity)", "panels": {"rgb": np.zeros((3, 4, 3)), "labels": label}}]
    return {"rows": rows, **({"class_names": class_names} if class_names is not None else {})}


def test_component_bars_state_the_saving_against_the_reference(tmp_path: Path) -> None:
    page = write_report(tmp_path, {"metric": "miou", "unit": "scene", "component": component()}).read_text()
    assert (tmp_path / "figures" / "component.png").is_file() and 'src="figures/component.png"' in page
    assert "<h2>depth encoder MAdds per scene</h2>" in page
    assert "this run: 38% fewer depth encoder MAdds than the best static fusion (weighted_add), miou +0.017" in page
    assert "<td>collapsed</td>" in page and "<td>62.1%</td>" in page  # note, share of the whole encoder


def test_component_without_reference_is_still_drawn(tmp_path: Path) -> None:
    data = component() | {"reference": None, "full": None}
    page = write_report(tmp_path, {"metric": "miou", "component": data}).read_text()
    assert "figures/component.png" in page and "fewer" not in page


def test_histogram_with_stacked_groups(tmp_path: Path) -> None:
    page = write_report(tmp_path, {"histograms": [histogram(), histogram() | {"stacked": {}}]}).read_text()
    for i in range(2):
        assert (tmp_path / "figures" / f"histogram_{i}.png").is_file()
    assert "<td>depth_pairs: flagged</td><td>1</td><td>0</td><td>4</td>" in page
    write_report(tmp_path, {"histograms": [histogram()]})
    assert not (tmp_path / "figures" / "histogram_1.png").exists()  # stale numbered figures are removed


def test_class_legend_names_every_class_in_its_panel_colour(tmp_path: Path, monkeypatch: Any) -> None:
    import dynmm.report.figures as figures
    from dynmm.report.schema import _Examples

    captured = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: captured.update(fig=fig))
    body = figures.draw_examples(_Examples.model_validate(examples(NAMES)), tmp_path / "x.png")
    (legend,) = captured["fig"].legends
    assert [t.get_text() for t in legend.get_texts()] == NAMES
    colours = class_colours(len(NAMES))
    handles = legend.legend_handles
    assert all(isinstance(h, Rectangle) for h in handles)
    assert [tuple(h.get_facecolor()) for h in handles] == [tuple(colours(i)) for i in range(len(NAMES))]
    assert "<td>poster</td>" in body


def test_examples_without_class_names_have_no_legend(tmp_path: Path) -> None:
    page = write_report(tmp_path, {"examples": examples()}).read_text()
    assert "figures/examples.png" in page and "<th>class</th>" not in page
    page = write_report(tmp_path, {"examples": examples(NAMES)}).read_text()
    assert "<td>unlabeled</td>" in page


def test_class_colours_keep_the_default_palette_and_grow_past_it() -> None:
    from matplotlib import colormaps

    default = colormaps["tab20"]
    assert [class_colours(20)(i) for i in range(20)] == [default(i) for i in range(20)]
    many = class_colours(41)
    assert len({many(i) for i in range(41)}) == 41


def valid() -> dict[str, Any]:
    return {
        "component": component(),
        "histograms": [histogram()],
        "examples": examples(NAMES),
        "pareto": {"dynmm": [{"label": "λ=0", "madds": 1.0, "metric": 0.5}], "test_rows": 10},
    }


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("pareto", "dynmm", 0, "metric_std"), -0.1, "pareto.dynmm[0].metric_std must be >= 0, got -0.1"),
        (("pareto", "dynmm", 0, "madds_std"), "big", "pareto.dynmm[0].madds_std must be a finite number, got 'big'"),
        (("pareto", "dynmm", 0, "collapsed"), "yes", "pareto.dynmm[0].collapsed must be true or false, got 'yes'"),
        (("pareto", "test_rows"), 174.0, "pareto.test_rows must be an integer, got 174.0"),
        (("pareto", "test_rows"), 0, "pareto.test_rows must be >= 1, got 0"),
        (("component", "reference"), "nope", "component.reference must be one of the bar names"),
        (("component", "bars"), [], "component.bars must be a non-empty list, got []"),
        (("component", "bars", 0, "group"), None, "component.bars[0].group must be a string, got None"),
        (("histograms", 0, "counts"), [1], "histograms[0].counts must be one count per bin (3), got [1]"),
        (("histograms", 0, "stacked", "depth_pairs", "flagged"), [1], "histograms[0].stacked['depth_pairs']"),
        (("examples", "class_names"), "floor", "examples.class_names must be a list, got 'floor'"),
        (("examples", "class_names", 1), 3, "examples.class_names[1] must be a string, got 3"),
    ],
)
def test_malformed_new_keys_are_refused_naming_them(tmp_path: Path, path: tuple, value: Any, message: str) -> None:
    data = copy.deepcopy(valid())
    write_report(tmp_path / "ok", copy.deepcopy(data))  # valid as given
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(DataError, match=re.escape(f"report data: {message}")):
        write_report(tmp_path / "bad", data)
    assert not (tmp_path / "bad").exists()
