"""write_report: every section drawn and referenced, text escaped, malformed data named, rewrites clean."""

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from dynmm.errors import DataError
from dynmm.report.html import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TITLE = "MOSI <script>alert('x')</script> & run"


def full_data() -> dict[str, Any]:
    return {
        "title": TITLE,
        "metric": "acc2",
        "summary": {"λ": 0.01, "test acc2": 0.7712, "hard routing": "yes", "samples": 686},
        "pareto": {
            "experts": [
                {"name": "text-only", "madds": 2.0e5, "metric": 0.74},
                {"name": "late fusion", "madds": 6.0e6, "metric": 0.78},
            ],
            "baselines": [{"name": "tensor fusion", "madds": 9.0e6, "metric": 0.77}],
            "dynmm": [{"label": "λ=0.01", "madds": 1.5e6, "metric": 0.775}],
            "beta_curve": [{"beta": b, "madds": m, "metric": a} for b, m, a in [(0, 6e6, 0.78), (1, 1e6, 0.76)]],
            "oracle": [{"madds": 2.0e5, "metric": 0.85}, {"madds": 6.0e6, "metric": 0.9}],
            "budget": 3.0e6,
        },
        "routing": {
            "experts": ["text", "late fusion"],
            "counts": [500, 186],
            "per_class": {"neg": [200, 100], "pos": [300, 86]},
        },
        "speed": [
            {"label": "dispatch", "batch_size": 1, "predicted_speedup": 2.5, "realized_speedup": 1.8},
            {"label": "masked", "batch_size": 64, "predicted_speedup": 2.5, "realized_speedup": 0.9},
        ],
        "robustness": [
            {"title": "audio noise", "xlabel": "σ", "levels": [0, 0.5, 1], "curves": {"DynMM": [0.77, 0.7, 0.6]}},
            {"title": "missing video", "xlabel": "p", "levels": [0, 1], "curves": {"late": [0.78, 0.5]}},
        ],
    }


FIGURES = {"pareto.png", "routing.png", "speed.png", "robustness_0.png", "robustness_1.png"}


def test_full_report_draws_and_references_every_figure(tmp_path: Path) -> None:
    out = write_report(tmp_path / "rep", full_data())
    assert out == tmp_path / "rep" / "report.html"
    page = out.read_text(encoding="utf-8")
    figures = tmp_path / "rep" / "figures"
    assert {p.name for p in figures.iterdir()} == FIGURES  # no temp files left behind either
    for name in FIGURES:
        assert (figures / name).read_bytes()[:8] == PNG_MAGIC
        assert f'src="figures/{name}"' in page
    assert "<script>" not in page
    assert "MOSI &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; run" in page
    assert "tensor fusion" in page and "0.7712" in page and "72.9%" in page  # tables of the numbers
    assert "λ=0.01" in page  # non-ASCII survives (written as UTF-8)
    assert not list((tmp_path / "rep").glob(".*.tmp"))


def test_method_and_units_name_the_tables(tmp_path: Path) -> None:
    data = {**full_data(), "method": "AdaMML", "unit": "clip"}
    data["routing"] = {**data["routing"], "unit": "segment"}
    page = write_report(tmp_path, data).read_text(encoding="utf-8")
    assert "MAdds / clip" in page and "<td>AdaMML</td>" in page and "<th>segments</th>" in page
    default = write_report(tmp_path / "d", full_data()).read_text(encoding="utf-8")
    assert "MAdds / sample" in default and "<td>DynMM</td>" in default and "<th>samples</th>" in default


def test_title_and_metric_only_gives_html_without_figures(tmp_path: Path) -> None:
    out = write_report(tmp_path, {"title": "empty run", "metric": "accuracy"})
    page = out.read_text(encoding="utf-8")
    assert "<h1>empty run</h1>" in page
    assert "<img" not in page
    assert not (tmp_path / "figures").exists() or not any((tmp_path / "figures").iterdir())


def _drop_madds(d: dict[str, Any]) -> None:
    del d["pareto"]["experts"][1]["madds"]


def _short_counts(d: dict[str, Any]) -> None:
    d["routing"]["counts"] = [686]


def _bad_per_class(d: dict[str, Any]) -> None:
    d["routing"]["per_class"]["pos"] = [1, 2, 3]


def _curve_length(d: dict[str, Any]) -> None:
    d["robustness"][1]["curves"]["late"] = [0.1]


def _string_speedup(d: dict[str, Any]) -> None:
    d["speed"][0]["realized_speedup"] = "fast"


def _nan_metric(d: dict[str, Any]) -> None:
    d["pareto"]["dynmm"][0]["metric"] = float("nan")


def _typo_section(d: dict[str, Any]) -> None:
    d["paretto"] = d.pop("pareto")


def _title_not_str(d: dict[str, Any]) -> None:
    d["title"] = 3


@pytest.mark.parametrize(
    ("corrupt", "key"),
    [
        (_drop_madds, "pareto.experts[1].madds"),
        (_short_counts, "routing.counts"),
        (_bad_per_class, "routing.per_class['pos']"),
        (_curve_length, "robustness[1].curves['late']"),
        (_string_speedup, "speed[0].realized_speedup"),
        (_nan_metric, "pareto.dynmm[0].metric"),
        (_typo_section, "paretto"),
        (_title_not_str, "title"),
    ],
)
def test_malformed_section_raises_data_error_naming_the_key(tmp_path: Path, corrupt: Any, key: str) -> None:
    data = copy.deepcopy(full_data())
    corrupt(data)
    with pytest.raises(DataError, match=re.escape(key)):
        write_report(tmp_path, data)
    assert not (tmp_path / "report.html").exists()  # validated before anything is written
    assert not (tmp_path / "figures").exists()


def _unknown_nested_key(d: dict[str, Any]) -> None:
    d["pareto"]["experts"][0]["colour"] = "red"


def _bool_count(d: dict[str, Any]) -> None:
    d["routing"]["counts"][0] = True


def _float_batch_size(d: dict[str, Any]) -> None:
    d["speed"][1]["batch_size"] = 64.0


def _nested_wrong_type(d: dict[str, Any]) -> None:
    d["robustness"][1]["levels"][0] = "none"


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_unknown_nested_key, "report data: pareto.experts[0].colour is not a known key (misspelled?), got 'red'"),
        (_bool_count, "report data: routing.counts[0] must be an integer, got True"),
        (_float_batch_size, "report data: speed[1].batch_size must be an integer, got 64.0"),
        (_nested_wrong_type, "report data: robustness[1].levels[0] must be a finite number, got 'none'"),
    ],
)
def test_schema_errors_are_one_line_data_errors_naming_the_path(tmp_path: Path, corrupt: Any, message: str) -> None:
    data = copy.deepcopy(full_data())
    corrupt(data)
    with pytest.raises(DataError) as raised:
        write_report(tmp_path, data)
    assert str(raised.value) == message  # a DataError in one line, not pydantic's multi-line ValidationError
    assert not (tmp_path / "report.html").exists()


def test_writing_twice_overwrites_cleanly(tmp_path: Path) -> None:
    write_report(tmp_path, full_data())
    second = full_data()
    second["title"] = "second run"
    second["robustness"] = second["robustness"][:1]
    del second["speed"]
    page = write_report(tmp_path, second).read_text(encoding="utf-8")
    assert "second run" in page and "MOSI" not in page
    names = {p.name for p in (tmp_path / "figures").iterdir()}
    assert names == {"pareto.png", "routing.png", "robustness_0.png"}  # stale figures removed
    assert "speed.png" not in page and "robustness_1.png" not in page
    assert not list(tmp_path.rglob("*.tmp"))


def test_examples_gallery(tmp_path):
    import numpy as np

    label = np.arange(12, dtype=np.int64).reshape(3, 4)
    rows = [{"label": "scene 0", "panels": {"rgb": np.zeros((3, 4, 3)), "depth": np.ones((3, 4)), "label": label}}]
    html_path = write_report(tmp_path, {"title": "t", "examples": {"title": "Examples", "rows": rows}})
    assert (tmp_path / "figures" / "examples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "figures/examples.png" in html_path.read_text()
    bad = [{"panels": {"rgb": np.zeros((2, 3, 4, 5))}}]
    with pytest.raises(DataError, match=r"examples.rows\[0\].panels.rgb"):
        write_report(tmp_path, {"examples": {"rows": bad}})
