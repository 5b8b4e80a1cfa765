import inspect
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tests.data.fixture_mmimdb import (
    ROWS,
    SPLITS,
    default_filled_rows,
    feature_rows,
    genre_matrix,
    write_mmimdb_fixture,
)
from torch.utils.data import DataLoader

from dynmm.config import ModelConfig, deep_merge, from_dict, load_config, to_dict
from dynmm.data.base import collate
from dynmm.data.lazy import H5Rows
from dynmm.data.mmimdb import MMIMDB_OPTIONS, SCALE_ROWS, check_mmimdb, load_mmimdb, mmimdb_info
from dynmm.errors import ConfigError, DataError
from dynmm.methods.modality_level.model import build_modality_level
from dynmm.nn.static_model import build_static_model
from dynmm.specs import TaskSpec

SIZES = {"train": 15552, "valid": 2608, "test": 7799}
KEYS = {"text": "features", "image": "vgg_features"}
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "mmimdb"


@pytest.fixture(scope="module")
def fixture_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mmimdb_fixture(tmp_path_factory.mktemp("mmimdb") / "multimodal_imdb.hdf5")


@pytest.fixture(scope="module")
def raw(fixture_file: Path) -> dict:
    return load_mmimdb(str(fixture_file), standardize=False)


def test_split_sizes_shapes_and_lazy_modalities(raw: dict) -> None:
    assert {k: len(v) for k, v in raw.items()} == SIZES
    for ds in raw.values():
        assert all(isinstance(ds.inputs[m], H5Rows) for m in KEYS)
        assert {m: tuple(x.shape[1:]) for m, x in ds.inputs.items()} == {"text": (300,), "image": (4096,)}
        assert ds.target.dtype == torch.float32 and ds.target.shape == (len(ds), 23)
    inputs, target = raw["valid"][5]
    assert inputs["text"].shape == (300,) and inputs["image"].shape == (4096,) and target.shape == (23,)


def test_written_rows_round_trip_exactly(raw: dict) -> None:
    filled = default_filled_rows()
    for split, (lo, hi) in SPLITS.items():
        rows = [r for r in filled if lo <= r < hi]
        local = torch.tensor(rows) - lo
        for modality, key in KEYS.items():
            got = raw[split].inputs[modality][local]
            assert torch.equal(got, torch.from_numpy(feature_rows(key, rows))), (split, modality)
            assert torch.equal(raw[split].inputs[modality][-1], torch.from_numpy(feature_rows(key, [hi - 1])[0]))
            assert not raw[split].inputs[modality][100].any()  # never written: the fill value


def test_targets_are_the_genres_of_each_split(raw: dict) -> None:
    genres = genre_matrix()
    for split, (lo, hi) in SPLITS.items():
        assert torch.equal(raw[split].target, torch.from_numpy(genres[lo:hi].astype(np.float32)))


def test_float_genres_load_too(tmp_path: Path) -> None:
    path = write_mmimdb_fixture(tmp_path / "f.hdf5", [], genres_dtype="float32")
    assert torch.equal(load_mmimdb(str(path))["test"].target, torch.from_numpy(genre_matrix()[18160:]).float())


def test_standardize_scales_each_modality_to_unit_rms(fixture_file: Path, raw: dict) -> None:
    scaled = load_mmimdb(str(fixture_file))
    rows = torch.arange(SCALE_ROWS)
    for modality in KEYS:
        x = scaled["train"].inputs[modality]
        assert x.scale != 1.0
        assert float(x[rows].double().pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-4)
        for split in SIZES:
            expected = raw[split].inputs[modality][:8] * np.float32(x.scale)
            assert torch.equal(scaled[split].inputs[modality][:8], expected)
    assert scaled["train"].inputs["text"].scale > 10 * scaled["train"].inputs["image"].scale


def test_a_shuffled_loader_yields_batches(raw: dict) -> None:
    loader = DataLoader(raw["train"], batch_size=16, shuffle=True, collate_fn=collate)
    inputs, target = next(iter(loader))
    assert inputs["text"].shape == (16, 300) and inputs["image"].shape == (16, 4096)
    assert inputs["text"].dtype == torch.float32 and target.shape == (16, 23) and target.dtype == torch.float32


def test_info_reads_the_layout_only(fixture_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("mmimdb_info read values")

    monkeypatch.setattr(h5py.Dataset, "__getitem__", no_reads)
    info = mmimdb_info(str(fixture_file))
    assert info.name == "mmimdb" and info.task == TaskSpec("multilabel", 23) and info.sizes == SIZES
    assert {m: (s.shape, s.kind) for m, s in info.modalities.items()} == {
        "text": ((300,), "vector"),
        "image": ((4096,), "vector"),
    }


def test_options_are_the_loader_keywords_and_are_checked(fixture_file: Path) -> None:
    assert MMIMDB_OPTIONS == tuple(inspect.signature(load_mmimdb).parameters)
    assert MMIMDB_OPTIONS == tuple(inspect.signature(mmimdb_info).parameters)
    for bad in ({"path": 3}, {"path": ""}, {"path": str(fixture_file), "standardize": "yes"}):
        for function in (load_mmimdb, mmimdb_info):
            with pytest.raises(ConfigError, match="mmimdb option"):
                function(**bad)  # type: ignore[arg-type]


def test_check_accepts_the_real_format(fixture_file: Path) -> None:
    report = check_mmimdb(fixture_file)
    assert report.ok, report.problems
    assert report.format == "mmimdb" and report.path == str(fixture_file)
    assert report.found == {
        "features": "(25959, 300) float32",
        "vgg_features": "(25959, 4096) float32",
        "genres": "(25959, 23) int8",
        "split train": "15552 rows [0, 15552)",
        "split valid": "2608 rows [15552, 18160)",
        "split test": "7799 rows [18160, 25959)",
    }


def _broken(tmp_path: Path, variant: str) -> Path:
    """A fixture file with one thing wrong; features unwritten unless the variant needs them."""
    path = tmp_path / "broken.hdf5"
    if variant == "missing file":
        return path
    if variant == "not hdf5":
        path.write_text("movie,genres\n")
        return path
    layouts = {
        "missing features": {"drop": ["features"]},
        "missing vgg_features": {"drop": ["vgg_features"]},
        "missing genres": {"drop": ["genres"]},
        "wrong width": {"widths": {"vgg_features": 2048}},
        "wrong rows": {"rows": 25000},
    }
    write_mmimdb_fixture(path, [], **layouts.get(variant, {}))  # type: ignore[arg-type]
    with h5py.File(path, "r+") as f:
        if variant == "text dtype":
            del f["features"]
            f["features"] = np.full((ROWS, 300), b"x", dtype="S1")
        elif variant == "genre value":
            f["genres"][7, 3] = 2
        elif variant == "absent genre":
            genres = f["genres"][()]
            genres[:15552, 11] = 0
            f["genres"][...] = genres
        elif variant == "nan":
            f["vgg_features"][15552 + 10, 5] = np.nan
    return path


BROKEN = {
    "missing file": "does not exist",
    "not hdf5": "is not an HDF5 file",
    "missing features": r"no dataset 'features' \(expected shape \(25959, 300\)\); it has \['genres', 'vgg_features'\]",
    "missing vgg_features": r"no dataset 'vgg_features'.*it has \['features', 'genres'\]",
    "missing genres": r"no dataset 'genres' \(expected shape \(25959, 23\)\)",
    "wrong width": r"vgg_features has shape \(25959, 2048\), expected \(25959, 4096\)",
    "wrong rows": r"features has 25000 rows, expected 25959",
    "text dtype": r"features has dtype \|S1, expected a numeric type",
}
VALUES = {
    "genre value": r"genres holds 1 entries other than 0 and 1 \(e.g. 2 at row 7, genre 3\)",
    "absent genre": r"genre column\(s\) \[11\] are never 1 in the train rows",
    "nan": r"vgg_features has NaN or inf in valid row 15562",
}


@pytest.mark.parametrize("variant", [*BROKEN, *VALUES])
def test_check_names_what_is_wrong(tmp_path: Path, variant: str) -> None:
    path = _broken(tmp_path, variant)
    report = check_mmimdb(path)
    assert not report.ok
    expected = BROKEN.get(variant) or VALUES[variant]
    assert any(re.search(expected, problem) for problem in report.problems), report.problems
    assert all(str(path.name) in p for p in report.problems)


@pytest.mark.parametrize("variant", BROKEN)
def test_loader_and_info_refuse_a_broken_layout(tmp_path: Path, variant: str) -> None:
    path = str(_broken(tmp_path, variant))
    for function in (load_mmimdb, mmimdb_info):
        with pytest.raises(DataError, match=BROKEN[variant]):
            function(path)


def test_loader_refuses_genres_other_than_0_1(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=VALUES["genre value"]):
        load_mmimdb(str(_broken(tmp_path, "genre value")))


def test_wrong_rows_keep_the_reason(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="official MultiBench split boundaries"):
        load_mmimdb(str(_broken(tmp_path, "wrong rows")))


@pytest.mark.parametrize("name", ["dynmm", "static"])
def test_configs_build_and_run_on_the_fixture(name: str, fixture_file: Path, raw: dict) -> None:
    config = load_config(CONFIGS / f"{name}.yaml")
    assert config.data.name == "mmimdb" and config.data.batch_size == 128
    assert config.data.options == {"path": "data/external/mmimdb/multimodal_imdb.hdf5"}
    info = mmimdb_info(str(fixture_file), **{k: v for k, v in config.data.options.items() if k != "path"})
    torch.manual_seed(0)
    if config.dynmm is None:
        model = build_static_model(config.model, info.modalities, info.task)
    else:
        experts = [
            build_static_model(
                from_dict(ModelConfig, deep_merge(to_dict(config.model), expert.model)), info.modalities, info.task
            )
            for expert in config.dynmm.experts
        ]
        assert [e.name for e in config.dynmm.experts] == ["text", "late_fusion"]
        model = build_modality_level(experts, config.dynmm.gate, info.modalities)
        assert model.gate.modalities == ["image", "text"] and model.expert_madds[0] < model.expert_madds[1]
    inputs, _ = next(iter(DataLoader(raw["test"], batch_size=8, collate_fn=collate)))
    model.eval()
    with torch.no_grad():
        out = model(inputs)
    assert out.shape == (8, 23) and torch.isfinite(out).all()
