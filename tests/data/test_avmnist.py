from pathlib import Path

import numpy as np
import pytest
import torch
from tests.data.fixture_avmnist import write_avmnist_fixture
from torch.utils.data import DataLoader

from dynmm.config import ModelConfig, deep_merge, from_dict, load_config, to_dict
from dynmm.data.avmnist import AVMNIST_OPTIONS, avmnist_info, check_avmnist, load_avmnist
from dynmm.data.base import collate
from dynmm.data.lazy import materialize
from dynmm.data.npy_rows import NpyRows
from dynmm.errors import ConfigError, DataError
from dynmm.methods.mfas.backbones import Backbone
from dynmm.methods.modality_level.model import build_modality_level
from dynmm.nn.static_model import build_static_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "avmnist"
VALID = 10


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_avmnist_fixture(tmp_path_factory.mktemp("avmnist"), train=40, test=20)


@pytest.fixture(scope="module")
def splits(folder: Path) -> dict:
    return load_avmnist(str(folder), valid_size=VALID)


def broken(tmp_path: Path, **kwargs) -> Path:
    return write_avmnist_fixture(tmp_path / "avmnist", **kwargs)


def test_options_name_the_loader_arguments() -> None:
    assert AVMNIST_OPTIONS == ("path", "valid_size")


def test_split_sizes_shapes_and_dtypes(splits: dict) -> None:
    assert {k: len(v) for k, v in splits.items()} == {"train": 30, "valid": 10, "test": 20}
    for ds in splits.values():
        assert tuple(ds.inputs["image"].shape[1:]) == (1, 28, 28)
        assert tuple(ds.inputs["audio"].shape[1:]) == (1, 112, 112)
        assert isinstance(ds.inputs["image"], torch.Tensor) and isinstance(ds.inputs["audio"], NpyRows)
        assert ds.target.dtype == torch.int64 and ds.target.shape == (len(ds),)
        inputs, target = ds[0]
        assert inputs["image"].dtype == inputs["audio"].dtype == torch.float32 and target.shape == ()


def test_values_round_trip_as_multibench_preprocesses_them(folder: Path, splits: dict) -> None:
    # MultiBench: x / 255, image rows reshaped to 28x28, a channel axis added; valid = the last training rows
    raw = {name: np.load(folder / name) for name in ("image/train_data.npy", "audio/train_data.npy")}
    labels = np.load(folder / "train_labels.npy")
    for split, rows in (("train", slice(0, 30)), ("valid", slice(30, 40))):
        ds = splits[split]
        image = torch.from_numpy(raw["image/train_data.npy"][rows] / 255.0).float().reshape(-1, 1, 28, 28)
        audio = torch.from_numpy(raw["audio/train_data.npy"][rows] / 255.0).float().unsqueeze(1)
        torch.testing.assert_close(ds.inputs["image"], image)
        torch.testing.assert_close(materialize(ds.inputs["audio"]), audio)
        assert ds.target.tolist() == labels[rows].tolist()
    test_audio = np.load(folder / "audio/test_data.npy")
    torch.testing.assert_close(splits["test"][7][0]["audio"], torch.from_numpy(test_audio[7] / 255.0).float()[None])
    assert splits["test"].target.tolist() == np.load(folder / "test_labels.npy").tolist()


def test_uint8_files_and_float_labels_load_alike(tmp_path: Path, splits: dict) -> None:
    path = broken(tmp_path, dtype=np.uint8, label_dtype=np.float64)
    other = load_avmnist(path, valid_size=VALID)
    for split, ds in other.items():
        torch.testing.assert_close(ds.inputs["image"], splits[split].inputs["image"])
        torch.testing.assert_close(ds.inputs["audio"][:], splits[split].inputs["audio"][:])
        assert ds.target.dtype == torch.int64 and torch.equal(ds.target, splits[split].target)


def test_data_loader_batches(splits: dict) -> None:
    loader = DataLoader(splits["train"], batch_size=8, shuffle=True, collate_fn=collate)
    inputs, target = next(iter(loader))
    assert inputs["image"].shape == (8, 1, 28, 28) and inputs["audio"].shape == (8, 1, 112, 112)
    assert target.shape == (8,) and target.dtype == torch.int64
    assert 0 <= float(inputs["audio"].min()) and float(inputs["audio"].max()) <= 1


def test_info_reads_headers_only(folder: Path, monkeypatch) -> None:
    def no_full_reads(*args, **kwargs):
        if kwargs.get("mmap_mode") != "r":
            raise AssertionError("avmnist_info read a whole array")
        return real_load(*args, **kwargs)

    real_load = np.load
    monkeypatch.setattr(np, "load", no_full_reads)
    info = avmnist_info(folder, valid_size=VALID)
    assert info.name == "avmnist" and info.sizes == {"train": 30, "valid": 10, "test": 20}
    assert {k: (s.shape, s.kind) for k, s in info.modalities.items()} == {
        "image": ((1, 28, 28), "image"),
        "audio": ((1, 112, 112), "image"),
    }
    assert info.task.kind == "classification" and info.task.num_classes == 10


def test_check_reports_what_it_found(folder: Path) -> None:
    report = check_avmnist(folder, valid_size=VALID)
    assert report.ok, report.problems
    assert report.format == "avmnist"
    assert report.found["image/train_data.npy"] == "(40, 784) float32"
    assert report.found["audio/test_data.npy"] == "(20, 112, 112) float32"
    assert report.found["train_labels.npy"] == "(40,) int64"
    assert report.found["splits"] == "train 30, valid 10, test 20"


def _problems(path: Path) -> str:
    report = check_avmnist(path, valid_size=VALID)
    assert not report.ok
    return "\n".join(report.problems)


def test_check_reports_broken_variants(tmp_path: Path) -> None:
    path = broken(tmp_path)
    (path / "audio" / "test_data.npy").unlink()
    np.save(path / "image" / "train_data.npy", np.zeros((40, 28, 28), np.float32))
    np.save(path / "test_labels.npy", np.full(20, 11))
    problems = _problems(path)
    assert "audio/test_data.npy is missing" in problems
    assert "image/train_data.npy has shape (40, 28, 28); expected (N, 784)" in problems
    assert "test_labels.npy holds labels from 11 to 11; expected digits 0-9" in problems

    path = broken(tmp_path / "b")
    np.save(path / "audio" / "train_data.npy", np.full((40, 112, 112), 300.0, np.float32))
    np.save(path / "image" / "test_data.npy", np.full((20, 784), 0.5, np.float32))
    np.save(path / "train_labels.npy", np.zeros(40, np.int64))
    np.save(path / "audio" / "test_data.npy", np.zeros((19, 112, 112), np.uint8))
    problems = _problems(path)
    assert "audio/train_data.npy (rows sampled from both ends) holds values from 300 to 300; expected 0-255" in problems
    assert (
        "image/test_data.npy (rows sampled from both ends) holds values from 0.5 to 0.5: they look already" in problems
    )
    assert "train_labels.npy has no sample of digit(s) [1, 2, 3, 4, 5, 6, 7, 8, 9]" in problems
    assert "the test files disagree on the number of samples" in problems and "audio/test_data.npy 19" in problems

    path = broken(tmp_path / "c")
    assert "the train files have 40 samples; valid_size=5000" in "\n".join(check_avmnist(path).problems)
    report = check_avmnist(tmp_path / "nowhere")
    assert (
        not report.ok
        and "does not exist" in report.problems[0]
        and "image/train_data.npy (N, 784)" in report.problems[0]
    )


def test_loader_errors_name_the_file_and_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"AV-MNIST folder .*nowhere does not exist; it must hold image/train_data"):
        load_avmnist(tmp_path / "nowhere")
    path = broken(tmp_path, train=12)
    with pytest.raises(DataError, match="the train files have 12 samples; valid_size=5000"):
        load_avmnist(path)
    with pytest.raises(ConfigError, match="valid_size must be >= 1"):
        load_avmnist(path, valid_size=0)

    (path / "train_labels.npy").unlink()
    with pytest.raises(DataError, match=r"train_labels.npy is missing in .*; an AV-MNIST folder holds"):
        avmnist_info(path, valid_size=VALID)
    np.save(path / "train_labels.npy", np.array([1, "a"] * 6, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"holds Python objects .*pickled data.*allow_pickle=False"):
        load_avmnist(path, valid_size=VALID)
    np.savez(path / "train_labels.npy", labels=np.zeros(12))
    (path / "train_labels.npy.npz").rename(path / "train_labels.npy")
    with pytest.raises(DataError, match=r"train_labels.npy is a zip/.npz archive"):
        load_avmnist(path, valid_size=VALID)
    (path / "train_labels.npy").write_bytes(b"not numpy at all")
    with pytest.raises(DataError, match=r"train_labels.npy is not a NumPy .npy file"):
        load_avmnist(path, valid_size=VALID)
    np.save(path / "train_labels.npy", np.arange(12) % 10)
    data = (path / "audio" / "train_data.npy").read_bytes()
    (path / "audio" / "train_data.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"audio/train_data.npy cannot be read as a .npy array \(truncated"):
        load_avmnist(path, valid_size=VALID)

    path = broken(tmp_path / "b", train=12)
    np.save(path / "audio" / "train_data.npy", np.zeros((11, 112, 112)))
    np.save(path / "image" / "test_data.npy", np.zeros((20, 28, 28)))
    every_problem = (
        r"(?s)not usable:\n- image/test_data.npy has shape \(20, 28, 28\); expected \(N, 784\)"
        r".*- the train files disagree .*audio/train_data.npy 11"
    )
    with pytest.raises(DataError, match=every_problem):
        load_avmnist(path, valid_size=VALID)
    path = broken(tmp_path / "c", train=12, label_dtype=np.float32)
    np.save(path / "train_labels.npy", np.full(12, 2.5, np.float32))
    with pytest.raises(DataError, match=r"train_labels.npy holds non-integer labels \(e.g. 2.5\)"):
        load_avmnist(path, valid_size=VALID)
    np.save(path / "train_labels.npy", np.full(12, 10))
    with pytest.raises(DataError, match=r"train_labels.npy holds labels from 10 to 10; expected digits 0-9"):
        load_avmnist(path, valid_size=VALID)


def _batch(folder: Path) -> tuple[dict, torch.Tensor]:
    data = load_avmnist(folder, valid_size=VALID)["test"]
    return next(iter(DataLoader(data, batch_size=4, collate_fn=collate)))


def test_configs_build_and_run_on_the_fixture(folder: Path) -> None:
    info = avmnist_info(folder, valid_size=VALID)
    inputs, _ = _batch(folder)

    static = load_config(CONFIGS / "static.yaml")
    assert static.data.name == "avmnist" and static.data.batch_size == 64
    assert static.data.options == {"path": "data/external/avmnist"}
    assert set(static.data.options) <= set(AVMNIST_OPTIONS)
    model = build_static_model(static.model, info.modalities, info.task)
    assert model(inputs).shape == (4, 10)

    config = load_config(CONFIGS / "dynmm.yaml")
    assert config.dynmm is not None
    experts = [
        build_static_model(
            from_dict(ModelConfig, deep_merge(to_dict(config.model), expert.model)), info.modalities, info.task
        )
        for expert in config.dynmm.experts
    ]
    assert [list(e.modalities) for e in experts] == [["image"], ["audio", "image"]]
    dynmm = build_modality_level(experts, config.dynmm.gate, info.modalities).eval()
    assert dynmm(inputs).shape == (4, 10)

    mfas = load_config(CONFIGS / "mfas.yaml")
    assert mfas.mfas is not None and mfas.mfas.modalities == ["image", "audio"]
    for modality in mfas.mfas.modalities:
        merged = deep_merge(to_dict(mfas.model), {"fusion": "unimodal", "modalities": [modality]})
        backbone = Backbone(build_static_model(from_dict(ModelConfig, merged), info.modalities, info.task))
        assert len(backbone.names) >= 3
        features = backbone.features(inputs[modality])
        assert len(features) == len(backbone.names) and features[-1].shape == (4, 10)
        assert all(f.dim() == 2 and f.shape[0] == 4 for f in features)
