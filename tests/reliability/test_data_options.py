"""`load_dataset` with bad options, and truncated files of the papers' formats that tests/data does not cover
yet (MM-IMDB HDF5, NYUv2 .mat and ESANet PNGs; affect and AV-MNIST truncation are tested in tests/data)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.data.fixture_mmimdb import write_mmimdb_fixture
from tests.data.fixture_nyuv2 import make_content, write_esanet, write_mat

from dynmm.data.registry import check_files, dataset_info, load_dataset
from dynmm.errors import ConfigError, DataError


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("mnist", {}, "unknown data set 'mnist'; known: ["),
        ("mosi", {"split": "split"}, "unknown option(s) ['split'] for data set 'mosi'; accepted"),
        ("mosi", {"split_column": 3}, "MOSI split_column 3 is unknown"),
        ("mosi", {"split_column": None}, "MOSI split_column None is unknown"),
        ("avdigits", {"seed": "0"}, "avdigits seed must be an int >= 0, got '0'"),
        ("avdigits", {"seed": 1.5}, "avdigits seed must be an int >= 0, got 1.5"),
        ("avdigits", {"seed": True}, "avdigits seed must be an int >= 0, got True"),
        ("avclips", {"seed": "x"}, "avclips seed must be an int"),
        ("rgbd_synth", {"seed": -1}, "rgbd_synth seed must be an int >= 0, got -1"),
        ("mmimdb", {}, "data set 'mmimdb' is read from your files: set data.options.path"),
        ("mmimdb", {"path": ""}, "set data.options.path"),
        ("mmimdb", {"path": 3}, "mmimdb option path must be the path of multimodal_imdb.hdf5, got 3"),
        ("affect", {"path": ["a.pkl"]}, "affect option path must be the path of a pickle file"),
        ("nyuv2", {"path": "x", "height": 0}, "height"),
    ],
)
def test_bad_options_are_config_errors(name, options, message):
    with pytest.raises(ConfigError) as caught:
        load_dataset(name, **options)
    assert message in str(caught.value)


@pytest.mark.parametrize("name", ["avdigits", "avclips"])
def test_a_negative_seed_is_a_config_error(name):
    with pytest.raises(ConfigError, match="seed"):
        load_dataset(name, seed=-1)


@pytest.mark.parametrize(
    ("name", "path", "message"),
    [
        ("affect", "/nonexistent/mosi_raw.pkl", "affect pickle /nonexistent/mosi_raw.pkl not found"),
        ("avmnist", "/nonexistent", "AV-MNIST folder /nonexistent does not exist"),
        ("nyuv2", "/nonexistent", "nyuv2 path /nonexistent does not exist"),
        ("mmimdb", "/nonexistent.hdf5", "does not exist"),
    ],
)
def test_missing_files_are_data_errors(name, path, message):
    with pytest.raises(DataError, match=message):
        load_dataset(name, path=path)


# ----------------------------------------------------------------------------- truncated files


@pytest.fixture(scope="module")
def mmimdb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mmimdb_fixture(tmp_path_factory.mktemp("mmimdb") / "multimodal_imdb.hdf5", [])


@pytest.mark.parametrize("keep", [100, 4096, "half", "all but 8"])
def test_truncated_mmimdb_file(mmimdb_file, tmp_path, keep):
    data = mmimdb_file.read_bytes()
    size = {"half": len(data) // 2, "all but 8": len(data) - 8}.get(keep, keep)  # type: ignore[call-overload]
    path = tmp_path / "multimodal_imdb.hdf5"
    path.write_bytes(data[:size])
    message = "could not be opened as HDF5.*truncated file" if size > 512 else "HDF5"
    for function in (load_dataset, dataset_info):
        with pytest.raises(DataError, match=message):
            function("mmimdb", path=str(path))
    report = check_files("mmimdb", str(path))
    assert not report.ok and any(path.name in p for p in report.problems)


@pytest.fixture(scope="module")
def nyuv2_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nyuv2")
    content = make_content(12, 16)
    return {"mat": write_mat(root / "mat", content), "esanet": write_esanet(root / "esanet", content)}


def test_a_nyuv2_mat_cut_in_its_header_is_a_data_error(nyuv2_files, tmp_path):
    mat = tmp_path / "nyu_depth_v2_labeled.mat"
    mat.write_bytes(nyuv2_files["mat"].read_bytes()[:100])
    with pytest.raises(DataError, match="is not a MATLAB v7.3 \\(HDF5\\) file"):
        load_dataset("nyuv2", path=str(mat), height=12, width=16)


@pytest.mark.parametrize("use", ["load", "check"])
def test_a_truncated_nyuv2_mat_is_a_data_error(nyuv2_files, tmp_path, use):
    source = nyuv2_files["mat"]
    for companion in source.parent.iterdir():
        (tmp_path / companion.name).write_bytes(companion.read_bytes())
    mat = tmp_path / source.name
    mat.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    if use == "check":
        report = check_files("nyuv2", str(mat))
        assert not report.ok and any("truncated" in p for p in report.problems)
    else:
        with pytest.raises(DataError, match="truncated"):
            load_dataset("nyuv2", path=str(mat), height=12, width=16)


@pytest.mark.parametrize("kind", ["rgb", "depth", "labels_40"])
def test_a_truncated_esanet_png_is_named(nyuv2_files, tmp_path, kind):
    import shutil

    root = shutil.copytree(nyuv2_files["esanet"], tmp_path / "esanet")
    png = sorted((root / "test" / kind).iterdir())[0]
    png.write_bytes(png.read_bytes()[:60])
    problems = check_files("nyuv2", str(root)).problems
    assert any(str(png) in p and "truncated" in p for p in problems), problems
    name = "labels" if kind == "labels_40" else kind
    with pytest.raises(DataError, match=f"{name} image {png} cannot be read as a PNG: image file is truncated"):
        test = load_dataset("nyuv2", path=str(root), height=12, width=16)["test"]  # reads its first sample
        [test[i] for i in range(len(test))]
