"""write_mfas_report: every figure drawn and referenced, malformed summaries named and harmless, 3 modalities."""

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from dynmm.errors import DataError
from dynmm.methods.mfas.report import rebuild_mfas_report, write_mfas_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = {"scores.png", "surrogate.png", "architecture.png", "pareto.png"}
BEST = "image.embedding+audio.relu2:relu | image.output+audio.embedding:sigmoid"


def _evaluation(index: int, step: int, score: float, predicted: float | None, madds: int) -> dict[str, Any]:
    return {
        "index": index,
        "step": step,
        "architecture": [[index % 3, index % 4, index % 2]],
        "name": f"arch{index}",
        "layers": 1,
        "score": score,
        "predicted": predicted,
        "madds": madds,
        "fusion_madds": 1000,
        "train_seconds": 0.01,
        "valid": {"accuracy": score},
    }


def _final(name: str, valid: float, test: float) -> dict[str, Any]:
    best = {"index": 3, "name": name, "architecture": [[2, 1, 0], [3, 2, 1]], "search_score": 0.7}
    best |= {"valid": {"accuracy": valid}, "test": {"accuracy": test}, "madds": 3_000_000, "train_seconds": 0.1}
    return {"trained": [best], "best": best, "epochs": 3}


def summary() -> dict[str, Any]:
    """The shape of `dynmm search mfas` output (cut down): one seed, MFAS and random search, a 2-layer best."""
    mfas = [_evaluation(i, 0, 0.3 + 0.05 * i, None, 1_000_000 * (i + 1)) for i in range(4)]
    mfas += [_evaluation(4 + i, 1, 0.5 + 0.04 * i, 0.45 + 0.05 * i, 2_500_000 + 100_000 * i) for i in range(3)]
    random = [_evaluation(i, i // 2, 0.25 + 0.06 * i, None, 1_200_000 * (i + 1)) for i in range(7)]
    step = {"surrogate_mae": None, "surrogate_spearman": None, "best_score": 0.5}
    seed_row = {"seed": 0, "mfas_best_search_score": 0.58, "mfas_final_valid": 0.6, "mfas_final_test": 0.55}
    seed_row |= {"random_best_search_score": 0.61, "random_final_valid": 0.57, "random_final_test": 0.52}
    best = _final(BEST, 0.6, 0.55)["best"] | {"seed": 0, "layers": 2}
    return {
        "method": "mfas",
        "name": "avdigits_mfas",
        "metric": "accuracy",
        "modalities": ["image", "audio"],
        "space": {
            "layers": {"image": ["relu1", "relu2", "embedding", "output"], "audio": ["relu1", "relu2", "embedding"]},
            "dims": {"image": [16, 32, 64, 10], "audio": [64, 64, 64]},
            "activations": ["relu", "sigmoid"],
            "max_layers": 2,
            "architectures": 600,
            "backbone_prefix_madds": {"image": [1, 2, 3, 4], "audio": [1, 2, 3]},
        },
        "searches": [
            {
                "kind": "mfas",
                "seed": 0,
                "evaluations": mfas,
                "steps": [{"step": 0, "position": 1, **step}, {"step": 1, "position": 2, **step}],
                "best": mfas[-1],
                "final": _final(BEST, 0.6, 0.55),
            },
            {
                "kind": "random",
                "seed": 0,
                "evaluations": random,
                "steps": [],
                "best": random[-1],
                "final": _final("r", 0.57, 0.52),
            },
        ],
        "comparison": {
            "per_seed": [seed_row],
            **{f"{k}_mean": v for k, v in seed_row.items() if k != "seed"},
            "mfas_at_least_random": False,
        },
        "surrogate": [
            {"step": 0, "position": 1, "spearman_mean": None, "mae_mean": None, "spearman_per_seed": [None]},
            {"step": 1, "position": 2, "spearman_mean": 0.8125, "mae_mean": 0.05, "spearman_per_seed": [0.8125]},
        ],
        "timing": {
            "architectures": [],
            "cached_s_per_architecture": 0.01,
            "live_s_per_architecture": 0.2,
            "speedup": 20.0,
            "cache_build_s": 0.17,
        },
        "best": best,
        "backbones": {
            "image": {"run": "x", "layers": [], "metrics": {}},
            "audio": {"run": "y", "layers": [], "metrics": {}},
        },
    }


def test_report_draws_and_references_every_figure(tmp_path: Path) -> None:
    out = write_mfas_report(tmp_path / "run", summary())
    assert out == tmp_path / "run" / "report.html"
    page = out.read_text(encoding="utf-8")
    figures = tmp_path / "run" / "figures"
    assert {p.name for p in figures.iterdir()} == FIGURES  # no temp files left behind either
    for name in FIGURES:
        assert (figures / name).read_bytes()[:8] == PNG_MAGIC
        assert f'src="figures/{name}"' in page
    assert BEST in page and "avdigits_mfas" in page
    assert "0.8125" in page and "20" in page and "3,000,000" in page  # surrogate, speedup, MAdds tables
    assert "random best search score" in page and "<td>no</td>" in page
    assert "<td>h2</td><td>output</td><td>embedding</td><td>sigmoid</td>" in page  # layers of the best


def test_without_random_search_or_predictions(tmp_path: Path) -> None:
    data = summary()
    data["searches"] = data["searches"][:1]
    for e in data["searches"][0]["evaluations"]:
        e["predicted"] = None
    comparison = data["comparison"]
    del comparison["mfas_at_least_random"]
    for key in [k for k in comparison if k.startswith("random")]:
        comparison[key] = None
    data["timing"]["speedup"] = None
    page = write_mfas_report(tmp_path, data).read_text(encoding="utf-8")
    assert "no random search" in page and {p.name for p in (tmp_path / "figures").iterdir()} == FIGURES


def test_three_modalities_six_layers_draw(tmp_path: Path) -> None:
    data = summary()
    data["modalities"] = ["image", "audio", "text"]
    data["space"]["layers"]["text"] = ["tok", "layer1", "layer2", "layer3", "pooled"]
    data["space"]["activations"] = ["relu", "sigmoid", "leaky_relu"]
    data["best"]["architecture"] = [[i % 4, i % 3, i % 5, i % 3] for i in range(6)]
    page = write_mfas_report(tmp_path, data).read_text(encoding="utf-8")
    assert (tmp_path / "figures" / "architecture.png").read_bytes()[:8] == PNG_MAGIC
    assert "<th>text</th>" in page and "<td>h6</td>" in page


def _drop_metric(d: dict[str, Any]) -> None:
    del d["metric"]


def _drop_score(d: dict[str, Any]) -> None:
    del d["searches"][1]["evaluations"][2]["score"]


def _string_predicted(d: dict[str, Any]) -> None:
    d["searches"][0]["evaluations"][5]["predicted"] = "high"


def _tap_out_of_range(d: dict[str, Any]) -> None:
    d["best"]["architecture"][1][1] = 3  # audio has 3 candidate layers


def _missing_layers(d: dict[str, Any]) -> None:
    del d["space"]["layers"]["audio"]


def _missing_speedup(d: dict[str, Any]) -> None:
    del d["timing"]["speedup"]


def _best_without_test_metric(d: dict[str, Any]) -> None:
    d["best"]["test"] = {"macro_f1": 0.5}


@pytest.mark.parametrize(
    ("corrupt", "key"),
    [
        (_drop_metric, "metric is missing"),
        (_drop_score, "searches[1].evaluations[2].score"),
        (_string_predicted, "searches[0].evaluations[5].predicted"),
        (_tap_out_of_range, "best.architecture[1]"),
        (_missing_layers, "space.layers.audio"),
        (_missing_speedup, "timing.speedup"),
        (_best_without_test_metric, "best.test.accuracy"),
    ],
)
def test_malformed_summary_names_the_key_and_keeps_the_old_report(tmp_path: Path, corrupt: Any, key: str) -> None:
    write_mfas_report(tmp_path, summary())
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    data = copy.deepcopy(summary())
    corrupt(data)
    with pytest.raises(DataError, match=re.escape(key)):
        write_mfas_report(tmp_path, data)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def _bool_step(d: dict[str, Any]) -> None:
    d["searches"][0]["evaluations"][2]["step"] = True


def _bool_best_seed(d: dict[str, Any]) -> None:
    d["best"]["seed"] = False


def _string_score(d: dict[str, Any]) -> None:
    d["searches"][1]["evaluations"][0]["score"] = "0.5"


def _string_best_valid(d: dict[str, Any]) -> None:
    d["best"]["valid"]["accuracy"] = "0.6"


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_bool_step, "report data: searches[0].evaluations[2].step must be an integer, got True"),
        (_bool_best_seed, "report data: best.seed must be an integer, got False"),
        (
            _tap_out_of_range,
            "report data: best.architecture[1] must be [tap per modality..., activation] within [4, 3, 2], "
            "got [3, 3, 1]",
        ),
        (_string_score, "report data: searches[1].evaluations[0].score must be a finite number, got '0.5'"),
        (_string_best_valid, "report data: best.valid.accuracy must be a finite number, got '0.6'"),
        (_missing_layers, "report data: space.layers.audio is missing"),
    ],
)
def test_mfas_json_errors_are_one_line_naming_path_expected_and_found(
    tmp_path: Path, corrupt: Any, message: str
) -> None:
    """As `dynmm report` rebuilds it from mfas.json: the whole message, one line."""
    data = summary()
    corrupt(data)
    (tmp_path / "mfas.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError) as caught:
        rebuild_mfas_report(tmp_path)
    assert str(caught.value) == message
    assert not (tmp_path / "report.html").exists()


def test_a_summary_that_is_no_mapping_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape("report data: summary must be a mapping, got []")):
        write_mfas_report(tmp_path, [])  # type: ignore[arg-type]


def test_keys_the_report_does_not_read_are_ignored(tmp_path: Path) -> None:
    """mfas.json holds much more than the report reads (settings, backbones, per-step details): no key is refused."""
    data = summary()
    data["searches"][0]["evaluations"][0]["colour"] = "red"
    data["space"]["layers"]["depth"] = ["d1"]  # a modality the search did not use
    data["comparison"]["per_seed"][0]["note"] = None
    assert write_mfas_report(tmp_path, data).is_file()
