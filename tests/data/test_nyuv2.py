"""NYUv2 from the official .mat and from ESANet folders: same tensors, label mapping, units, resizing, lazy rows,
checks of good and broken files, clear errors, and the ResNet-50 fusion-level config."""

import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tests.data.fixture_nyuv2 import (
    Content,
    make_content,
    official_content,
    write_esanet,
    write_mapping,
    write_mat,
    write_splits,
)
from torch.utils.data import DataLoader

from dynmm.config import load_config
from dynmm.data.base import collate
from dynmm.data.nyuv2 import (
    DEPTH_SCALE,
    IGNORE,
    NYUV2_OPTIONS,
    RGB_MEAN,
    RGB_STD,
    NYUv2Rows,
    check_nyuv2,
    load_nyuv2,
    nyuv2_info,
)
from dynmm.errors import ConfigError, DataError
from dynmm.methods.fusion_level.model import build_fusion_level

H, W = 12, 16
NATIVE = {"height": H, "width": W}
REPO = Path(__file__).resolve().parents[2]
REAL_PAIR = Path(__file__).parent / "files" / "nyu_mini"


@pytest.fixture(scope="module")
def content() -> Content:
    return make_content(H, W)


@pytest.fixture(scope="module")
def files(tmp_path_factory, content) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nyuv2")
    return {"mat": write_mat(root / "mat", content), "esanet": write_esanet(root / "esanet", content)}


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nyuv2_official")
    content = official_content()
    return {"mat": write_mat(root / "mat", content), "esanet": write_esanet(root / "esanet", content)}


def everything(ds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return ds.inputs["rgb"][:], ds.inputs["depth"][:], ds.target[:]


@pytest.mark.parametrize("normalize", [True, False])
def test_both_formats_load_the_same_tensors(files, normalize):
    mat = load_nyuv2(str(files["mat"]), normalize=normalize, **NATIVE)
    esanet = load_nyuv2(str(files["esanet"]), normalize=normalize, **NATIVE)
    assert {k: len(v) for k, v in mat.items()} == {"train": 5, "valid": 3, "test": 3}
    for split in mat:
        for a, b in zip(everything(mat[split]), everything(esanet[split]), strict=True):
            assert torch.equal(a, b)
        assert torch.equal(mat[split].meta["frame"], esanet[split].meta["frame"])
    assert mat["train"].meta["frame"].tolist() == [1, 3, 4, 6, 8]


def test_shapes_units_and_label_mapping(files, content):
    for path in files.values():
        splits = load_nyuv2(str(path), normalize=False, **NATIVE)
        test = splits["test"]
        rgb, depth, target = everything(test)
        assert rgb.shape == (3, 3, H, W) and depth.shape == (3, 1, H, W) and target.shape == (3, H, W)
        assert rgb.dtype == depth.dtype == torch.float32 and target.dtype == torch.int64
        rows = [content.row(f) for f in content.test]
        expected_rgb = torch.from_numpy(content.rgb[rows]).permute(0, 3, 1, 2).float() / 255
        torch.testing.assert_close(rgb, expected_rgb)
        metres = torch.from_numpy(content.depth_mm[rows].astype(np.float32)) / 1000  # PNG mm == .mat metres
        torch.testing.assert_close(depth[:, 0], metres, rtol=0, atol=1e-6)
        raw = torch.from_numpy(content.labels[rows].astype(np.int64))
        mapped = torch.from_numpy(content.mapping)[(raw - 1).clamp_min(0)] - 1
        assert torch.equal(target, torch.where(raw == 0, IGNORE, mapped))
        assert target[:, 1].eq(IGNORE).all()  # row 1 is unlabeled (0)
        assert int(target[0, 0, 2]) == content.mapping[893] - 1  # original class 894
        assert target[target != IGNORE].max() <= 39 and target.min() >= 0


def test_normalised_inputs(files):
    plain = load_nyuv2(str(files["mat"]), normalize=False, **NATIVE)["train"]
    norm = load_nyuv2(str(files["mat"]), **NATIVE)["train"]
    mean, std = torch.tensor(RGB_MEAN)[:, None, None], torch.tensor(RGB_STD)[:, None, None]
    torch.testing.assert_close(norm.inputs["rgb"][:], (plain.inputs["rgb"][:] - mean) / std)
    torch.testing.assert_close(norm.inputs["depth"][:], plain.inputs["depth"][:] / DEPTH_SCALE)
    assert torch.equal(norm.target[:], plain.target[:])


def test_raw_depth_keeps_holes_in_both_formats(files, content):
    mat = load_nyuv2(str(files["mat"]), raw_depth=True, normalize=False, **NATIVE)["test"].inputs["depth"][:]
    esanet = load_nyuv2(str(files["esanet"]), raw_depth=True, normalize=False, **NATIVE)["test"].inputs["depth"][:]
    assert torch.equal(mat, esanet)
    assert mat[:, 0, ::3, ::2].eq(0).all() and mat[:, 0, 1::3].gt(0).all()
    half = load_nyuv2(str(files["mat"]), raw_depth=True, height=6, width=8)["test"].inputs["depth"][:]
    assert set(half.unique().tolist()) <= set((mat / DEPTH_SCALE).unique().tolist())  # nearest: no blended holes


def test_resizing(files):
    native = {k: load_nyuv2(str(p), normalize=False, **NATIVE)["valid"] for k, p in files.items()}
    small = {k: load_nyuv2(str(p), normalize=False, height=6, width=10)["valid"] for k, p in files.items()}
    for key in files:
        rgb, depth, target = everything(small[key])
        assert rgb.shape == (3, 3, 6, 10) and depth.shape == (3, 1, 6, 10) and target.shape == (3, 6, 10)
        full_rgb, full_depth, full_target = everything(native[key])
        torch.testing.assert_close(rgb, F.interpolate(full_rgb, size=(6, 10), mode="bilinear", align_corners=False))
        torch.testing.assert_close(depth, F.interpolate(full_depth, size=(6, 10), mode="bilinear", align_corners=False))
        nearest = F.interpolate(full_target[:, None].float(), size=(6, 10), mode="nearest")[:, 0].long()
        assert torch.equal(target, nearest)
    for a, b in zip(everything(small["mat"]), everything(small["esanet"]), strict=True):
        assert torch.equal(a, b)
    info = nyuv2_info(str(files["mat"]), height=6, width=10)
    assert info.modalities["rgb"].shape == (3, 6, 10) and info.modalities["depth"].shape == (1, 6, 10)


def test_rows_are_lazy_and_index_like_tensors(files):
    train = load_nyuv2(str(files["mat"]), **NATIVE)["train"]
    rows = train.inputs["rgb"]
    assert isinstance(rows, NYUv2Rows) and isinstance(train.target, NYUv2Rows)
    assert rows.shape == (5, 3, H, W) and len(rows) == 5 and len(train) == 5
    every = rows[:]
    torch.testing.assert_close(rows[2], every[2])
    torch.testing.assert_close(rows[-1], every[4])
    torch.testing.assert_close(rows[1:5:2], every[1:5:2])
    index = torch.tensor([4, 0, 4])
    torch.testing.assert_close(rows[index], every[index])
    torch.testing.assert_close(rows[np.array([3])], every[[3]])
    assert rows[torch.tensor([], dtype=torch.long)].shape == (0, 3, H, W)
    with pytest.raises(IndexError):
        rows[5]
    with pytest.raises(IndexError):
        rows[torch.tensor([0, 7])]
    inputs, target = train[3]
    assert inputs["depth"].shape == (1, H, W) and target.shape == (H, W) and target.dtype == torch.int64
    subset = train.subset([4, 1])
    assert torch.equal(subset.target, train.target[torch.tensor([4, 1])])
    assert subset.meta["frame"].tolist() == [8, 3]
    clone = pickle.loads(pickle.dumps(train))  # what a DataLoader worker gets: the file reopens in it
    torch.testing.assert_close(clone.inputs["rgb"][:], every)
    batch_inputs, batch_target = next(iter(DataLoader(train, batch_size=4, collate_fn=collate)))
    assert batch_inputs["rgb"].shape == (4, 3, H, W) and batch_target.shape == (4, H, W)


def test_valid_split_and_info(files):
    for path in files.values():
        default = load_nyuv2(str(path), **NATIVE)
        assert torch.equal(default["valid"].meta["frame"], default["test"].meta["frame"])
        held = load_nyuv2(str(path), valid_size=2, **NATIVE)
        assert held["train"].meta["frame"].tolist() == [1, 3, 4] and held["valid"].meta["frame"].tolist() == [6, 8]
        torch.testing.assert_close(held["valid"].inputs["rgb"][:], default["train"].inputs["rgb"][3:])
        info = nyuv2_info(str(path), valid_size=2, **NATIVE)
        assert info.sizes == {k: len(v) for k, v in held.items()} == {"train": 3, "valid": 2, "test": 3}
        assert info.task.kind == "segmentation" and info.task.num_classes == 40
        with pytest.raises(ConfigError, match="valid_size"):
            load_nyuv2(str(path), valid_size=5, **NATIVE)
    assert nyuv2_info(str(files["mat"].parent)).sizes == {"train": 5, "valid": 3, "test": 3}  # folder of the .mat
    assert set(NYUV2_OPTIONS) >= {"path", "format", "height", "width", "class_mapping", "splits", "valid_size"}


def test_companion_files_can_live_elsewhere(tmp_path, files, content):
    other = tmp_path / "meta"
    other.mkdir()
    shutil.copy(files["mat"].parent / "classMapping40.mat", other / "map.mat")
    write_splits(other / "s.mat", content.train[:2], content.test)
    mat = tmp_path / "data" / "nyu.mat"
    mat.parent.mkdir()
    shutil.copy(files["mat"], mat)
    with pytest.raises(DataError, match="splits file .*/data/splits.mat is missing"):
        load_nyuv2(str(mat), **NATIVE)
    with pytest.raises(DataError, match="class mapping file .*/data/classMapping40.mat is missing"):
        load_nyuv2(str(mat), splits=str(other / "s.mat"), **NATIVE)
    companions = {"class_mapping": str(other / "map.mat"), "splits": str(other / "s.mat")}
    splits = load_nyuv2(str(mat), **companions, **NATIVE)
    assert splits["train"].meta["frame"].tolist() == [1, 3]
    beside = check_nyuv2(mat).problems
    assert sum("is missing (it comes with the NYUv2 toolbox" in p for p in beside) == 2
    elsewhere = check_nyuv2(mat, **companions).problems
    assert len(elsewhere) == 5 and not any("is missing" in p for p in elsewhere)  # only the non-standard sizes


def test_check_accepts_the_official_layout(official):
    for path in official.values():
        report = check_nyuv2(path)
        assert report.ok, report.problems
        assert report.format == "nyuv2"
    mat = check_nyuv2(official["mat"].parent)  # the folder holding the .mat
    assert mat.ok and mat.found["images"] == "(1449, 3, 640, 480) uint8" and "795" in mat.found["splits"]
    assert check_nyuv2(official["esanet"]).found["train.txt"] == "795 samples"
    full = load_nyuv2(str(official["esanet"]))
    assert {k: len(v) for k, v in full.items()} == {"train": 795, "valid": 654, "test": 654}
    assert full["test"][0][0]["rgb"].shape == (3, 480, 640)


def test_check_reports_non_standard_sizes_only(files):
    mat = check_nyuv2(files["mat"])
    assert len(mat.problems) == 5 and all("expected (1449" in p or "standard split" in p for p in mat.problems)
    esanet = check_nyuv2(files["esanet"])
    assert len(esanet.problems) == 4
    assert all("standard split" in p or "expected all (480, 640)" in p for p in esanet.problems)


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source.parent if source.is_file() else source, target)
    return target / source.name if source.is_file() else target


def test_check_and_loader_report_a_missing_key(tmp_path, files):
    path = copy_tree(files["mat"], tmp_path / "mat")
    with h5py.File(path, "r+") as f:
        del f["labels"]
    report = check_nyuv2(path)
    assert any("dataset 'labels' is missing" in p for p in report.problems)
    with pytest.raises(DataError, match=r"no dataset\(s\) \['labels'\]"):
        load_nyuv2(str(path), **NATIVE)


def test_check_and_loader_report_a_mapping_out_of_range(tmp_path, files, content):
    path = copy_tree(files["mat"], tmp_path / "mat")
    bad = content.mapping.copy()
    bad[5] = 41
    write_mapping(path.parent / "classMapping40.mat", bad)
    report = check_nyuv2(path)
    assert any("classMapping40.mat:mapClass must map into 1..40" in p for p in report.problems)
    with pytest.raises(DataError, match="mapClass must map into 1..40"):
        load_nyuv2(str(path), **NATIVE)
    write_mapping(path.parent / "classMapping40.mat", content.mapping[:40])
    assert any("must have 894 entries" in p for p in check_nyuv2(path).problems)


def test_check_reports_bad_splits_and_depth(tmp_path, files, content):
    path = copy_tree(files["mat"], tmp_path / "mat")
    write_splits(path.parent / "splits.mat", [1, 2, 3], [3, 10])
    problems = check_nyuv2(path).problems
    assert any("1..9" in p and "testNdxs" in p for p in problems)
    write_splits(path.parent / "splits.mat", [1, 2, 3], [3, 4])
    assert any("both trainNdxs and testNdxs" in p for p in check_nyuv2(path).problems)
    with h5py.File(path, "r+") as f:
        f["depths"][0] = 25.0
    assert any("depths spans" in p for p in check_nyuv2(path).problems)


@pytest.mark.parametrize(
    ("folder", "mode", "message"),
    [("rgb", "RGBA", "must be 8-bit RGB"), ("depth", "L", "16-bit greyscale"), ("labels_40", "RGB", "8-bit grey")],
)
def test_check_and_loader_report_a_wrong_png_mode(tmp_path, files, folder, mode, message):
    root = copy_tree(files["esanet"], tmp_path / "esanet")
    png = root / "test" / folder / "0002.png"
    Image.open(png).convert(mode).save(png)
    report = check_nyuv2(root)
    assert any(message in p and "0002.png" in p for p in report.problems)
    with pytest.raises(DataError, match=message):
        load_nyuv2(str(root), **NATIVE)


def test_check_and_loader_report_a_missing_label_file(tmp_path, files):
    root = copy_tree(files["esanet"], tmp_path / "esanet")
    (root / "train" / "labels_40" / "0004.png").unlink()
    report = check_nyuv2(root)
    assert any("1 PNG(s)" in p and "labels_40/0004.png" in p for p in report.problems)
    with pytest.raises(DataError, match="labels_40/0004.png"):
        load_nyuv2(str(root), **NATIVE)


def test_check_reports_labels_above_40(tmp_path, files):
    root = copy_tree(files["esanet"], tmp_path / "esanet")
    Image.fromarray(np.full((H, W), 41, np.uint8)).save(root / "train" / "labels_40" / "0001.png")
    assert any("has value 41" in p for p in check_nyuv2(root).problems)


def test_clear_errors(tmp_path, files):
    with pytest.raises(ConfigError, match="format"):
        load_nyuv2(str(files["mat"]), format="png")
    with pytest.raises(ConfigError, match="height"):
        load_nyuv2(str(files["mat"]), height=0)
    with pytest.raises(ConfigError, match="unknown nyuv2 option"):
        nyuv2_info(str(files["mat"]), seed=0)
    with pytest.raises(ConfigError, match="normalize must be bool"):
        load_nyuv2(str(files["mat"]), normalize=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="for the .mat format"):
        load_nyuv2(str(files["esanet"]), class_mapping="x.mat")
    with pytest.raises(DataError, match="does not exist"):
        load_nyuv2(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="not the nyu_depth_v2_labeled.mat"):
        load_nyuv2(str(files["esanet"]), format="mat")
    v5 = tmp_path / "old.mat"
    write_mapping(v5, np.ones(894))
    with pytest.raises(DataError, match="MATLAB v5 file"):
        load_nyuv2(str(v5))
    assert any("MATLAB v5 file" in p for p in check_nyuv2(v5).problems)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not check_nyuv2(empty).ok


def test_raw_depth_needs_raw_depths(tmp_path, files):
    path = copy_tree(files["mat"], tmp_path / "mat")
    with h5py.File(path, "r+") as f:
        del f["rawDepths"]
    load_nyuv2(str(path), **NATIVE)  # the in-painted depth is enough by default
    with pytest.raises(DataError, match=r"no dataset\(s\) \['rawDepths'\]"):
        load_nyuv2(str(path), raw_depth=True, **NATIVE)


def test_real_nyuv2_pngs_decode(tmp_path, content):
    """A real NYUv2 RGB / 16-bit depth pair in the ESANet layout (labels generated)."""
    root = tmp_path / "esanet"
    for split in ("train", "test"):
        (root / f"{split}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{split}.txt").write_text("0001\n")
        for folder, source in (("rgb", "image_3.png"), ("depth", "depth_3.png")):
            (root / split / folder).mkdir(parents=True)
            shutil.copy(REAL_PAIR / source, root / split / folder / "0001.png")
        (root / split / "labels_40").mkdir()
        Image.fromarray(np.full((480, 640), 7, np.uint8)).save(root / split / "labels_40" / "0001.png")
    report = check_nyuv2(root)
    assert [p for p in report.problems if "standard split" not in p] == []
    (inputs, target) = load_nyuv2(str(root), normalize=False)["test"][0]
    millimetres = np.asarray(Image.open(REAL_PAIR / "depth_3.png")).astype(np.float32)
    torch.testing.assert_close(inputs["depth"][0], torch.from_numpy(millimetres) / 1000)
    assert 1.19 < float(inputs["depth"].min()) and float(inputs["depth"].max()) < 3.3
    assert inputs["rgb"].shape == (3, 480, 640) and 0 <= float(inputs["rgb"].min()) < float(inputs["rgb"].max()) <= 1
    assert target.unique().tolist() == [6]


def test_fusion_config_builds_resnet50_for_nyuv2(files):
    config = load_config(REPO / "configs" / "nyuv2" / "dynmm_fusion.yaml")
    assert config.data.name == "nyuv2" and config.data.batch_size == 8
    assert config.data.options["path"].endswith("nyu_depth_v2_labeled.mat")
    assert config.fusion_level is not None and config.fusion_level.layout == "resnet50"
    default = nyuv2_info(str(files["mat"]))  # the config's size: 480 x 640 from the defaults
    assert default.modalities["rgb"].shape == (3, 480, 640)
    info = nyuv2_info(str(files["mat"]), height=32, width=48)  # small for a CPU test
    torch.manual_seed(0)
    model = build_fusion_level(config.fusion_level, info.modalities, info.task).eval()
    assert model.main.layout.block == "bottleneck" and model.main.stage_channels[-1] == 2048
    splits = load_nyuv2(str(files["mat"]), height=32, width=48)
    inputs, _ = collate([splits["train"][0], splits["train"][1]])
    with torch.no_grad():
        assert model(inputs).shape == (2, 40, 32, 48)
