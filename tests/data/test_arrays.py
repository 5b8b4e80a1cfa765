"""`data.name: arrays`: the user's own npz / npy folder / parquet / datasets files, z-scored with recorded train
statistics, checked by `dynmm data check --format arrays`, and trained with static fusion and DynMM."""

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dynmm.cli import app
from dynmm.config import load_config
from dynmm.data.arrays import arrays_info, load_arrays, resolve_arrays_options
from dynmm.data.arrays_check import check_arrays
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.data.lazy import LazyRows, materialize
from dynmm.data.npy_rows import NpyRows
from dynmm.data.registry import FORMATS, check_files, load_dataset
from dynmm.errors import ConfigError, DataError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "arrays"
N = 60
LABELS = np.array(["train", "valid", "test"])


def make_arrays(n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    """A vector and an image modality far from zero mean / unit std, a 3-class target that the vector predicts,
    and a split that interleaves rows (train/valid/test mixed through the file)."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 3, n)
    return {
        "text": (rng.normal(2.0, 3.0, (n, 5)) + target[:, None]).astype(np.float32),
        "image": rng.normal(-1.0, 0.5, (n, 2, 4, 4)).astype(np.float32)
        * np.array([1.0, 4.0], np.float32)[:, None, None],
        "target": target,
        "split": LABELS[np.arange(n) % 5 % 3],  # 0 1 2 0 1 | 0 1 2 0 1 ...: each split interleaved
    }


def zscored(values: np.ndarray, train: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """numpy's reference: (x - mean) / std with statistics over the train rows (and `axes`), float64."""
    ref = train.astype(np.float64)
    mean, std = ref.mean(axis=axes, keepdims=True), ref.std(axis=axes, keepdims=True)
    return (values.astype(np.float64) - mean[0]) / std[0]


def assert_zscored(splits, arrays: dict[str, np.ndarray]) -> None:
    codes = {name: np.flatnonzero(arrays["split"] == name) for name in LABELS}
    train = codes["train"]
    for split, rows in codes.items():
        got = splits[split]
        assert len(got) == rows.size
        text = zscored(arrays["text"][rows], arrays["text"][train], (0,))
        image = zscored(arrays["image"][rows], arrays["image"][train], (0, 2, 3))
        np.testing.assert_allclose(materialize(got.inputs["text"]).numpy(), text, atol=1e-6, rtol=0)
        np.testing.assert_allclose(materialize(got.inputs["image"]).numpy(), image, atol=1e-6, rtol=0)
        assert got.target.tolist() == arrays["target"][rows].tolist()


@pytest.fixture
def npz(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = make_arrays()
    np.savez(tmp_path / "data.npz", **arrays)
    return tmp_path / "data.npz", arrays


@pytest.fixture
def npy_folder(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = make_arrays()
    folder = tmp_path / "arrays"
    folder.mkdir()
    for name, values in arrays.items():
        np.save(folder / f"{name}.npy", values)
    return folder, arrays


# --- formats -------------------------------------------------------------------------------------------------


def test_registered_as_a_format_with_its_options():
    assert "arrays" in FORMATS
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['trget'\]"):
        load_dataset("arrays", path="x.npz", trget="y")
    with pytest.raises(ConfigError, match="set data.options.path"):
        load_dataset("arrays")


def test_npz_members_are_memory_mapped_and_zscored(npz):
    path, arrays = npz
    splits = load_dataset("arrays", path=str(path))
    assert isinstance(splits["train"].inputs["text"], NpyRows)  # np.savez stores members uncompressed
    assert_zscored(splits, arrays)
    info = arrays_info(path=str(path))
    assert {k: (s.shape, s.kind) for k, s in info.modalities.items()} == {
        "text": ((5,), "vector"),
        "image": ((2, 4, 4), "image"),
    }
    assert (info.task.kind, info.task.num_classes) == ("classification", 3)
    assert info.sizes == {"train": 24, "valid": 24, "test": 12}


def test_compressed_npz_is_read_into_memory(tmp_path):
    arrays = make_arrays()
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    splits = load_arrays(path=str(tmp_path / "c.npz"))
    assert isinstance(splits["valid"].inputs["image"], torch.Tensor)
    assert_zscored(splits, arrays)


def test_npy_folder_is_memory_mapped_not_loaded(npy_folder):
    folder, arrays = npy_folder
    splits = load_arrays(path=str(folder))
    text = splits["train"].inputs["text"]
    assert isinstance(text, LazyRows) and not isinstance(text, torch.Tensor)
    text[0]
    assert isinstance(text._array(), np.memmap)  # rows come from the mapped file, per batch
    assert_zscored(splits, arrays)
    clone = pickle.loads(pickle.dumps(text))  # a DataLoader worker reopens the file
    torch.testing.assert_close(clone[[3, 1]], text[[3, 1]])


def test_split_as_integers_equals_split_as_strings(tmp_path):
    arrays = make_arrays()
    as_ints = {**arrays, "split": np.arange(N) % 5 % 3}
    np.savez(tmp_path / "s.npz", **arrays)
    np.savez(tmp_path / "i.npz", **as_ints)
    strings, ints = load_arrays(path=str(tmp_path / "s.npz")), load_arrays(path=str(tmp_path / "i.npz"))
    for split in LABELS:
        torch.testing.assert_close(materialize(ints[split].inputs["text"]), materialize(strings[split].inputs["text"]))
        assert ints[split].target.tolist() == strings[split].target.tolist()


def test_without_a_split_array_a_seeded_random_split(tmp_path):
    arrays = make_arrays(n=100)
    del arrays["split"]
    np.savez(tmp_path / "d.npz", **arrays)
    path = str(tmp_path / "d.npz")
    first, again = load_arrays(path=path, seed=1), load_arrays(path=path, seed=1)
    other = load_arrays(path=path, seed=2)
    assert {k: len(v) for k, v in first.items()} == {"train": 80, "valid": 10, "test": 10}
    assert first["test"].target.tolist() == again["test"].target.tolist()
    torch.testing.assert_close(materialize(first["test"].inputs["text"]), materialize(again["test"].inputs["text"]))
    assert not torch.equal(materialize(first["test"].inputs["text"]), materialize(other["test"].inputs["text"]))
    halves = load_arrays(path=path, split_fractions=[0.5, 0.25, 0.25])
    assert {k: len(v) for k, v in halves.items()} == {"train": 50, "valid": 25, "test": 25}
    # The run seed reaches the split: the data module fills `seed` for data sets that accept it.
    module = MultimodalDataModule("arrays", seed=7, options={"path": path})
    module.setup()
    assert module.options["seed"] == 7
    assert module.splits["test"].target.tolist() == load_arrays(path=path, seed=7)["test"].target.tolist()
    with pytest.raises(ConfigError, match="split_fractions must be three numbers"):
        load_arrays(path=path, split_fractions=[0.5, 0.5])


def test_options_kinds_modalities_zscore_and_explicit_stats(npz):
    path, arrays = npz
    train = arrays["split"] == "train"
    flat = arrays_info(path=str(path), kinds={"image": "vector"}, modalities=["image"])
    assert list(flat.modalities) == ["image"] and flat.modalities["image"].shape == (32,)
    assert arrays_info(path=str(path), kinds={"image": "sequence"}).modalities["image"].shape == (2, 16)
    raw = load_arrays(path=str(path), zscore=["image"])
    np.testing.assert_array_equal(raw["train"].inputs["text"][:].numpy(), arrays["text"][train])
    given = {"text": {"mean": 1.0, "std": 2.0}, "image": {"mean": [0.5, -0.5], "std": [1.0, 4.0]}}
    splits = load_arrays(path=str(path), stats=given)
    np.testing.assert_allclose(splits["train"].inputs["text"][:].numpy(), (arrays["text"][train] - 1) / 2, atol=1e-6)
    image = (arrays["image"][train] - np.array([0.5, -0.5])[:, None, None]) / np.array([1.0, 4.0])[:, None, None]
    np.testing.assert_allclose(splits["train"].inputs["image"][:].numpy(), image, atol=1e-6)
    with pytest.raises(ConfigError, match=r"stats.image.mean must be a number or 2 numbers"):
        load_arrays(path=str(path), stats={"image": {"mean": [1, 2, 3], "std": 1.0}})
    with pytest.raises(ConfigError, match=r"kinds names \['audio'\], which are not modalities"):
        load_arrays(path=str(path), kinds={"audio": "vector"})
    with pytest.raises(ConfigError, match="task must be one of"):
        load_arrays(path=str(path), task="ranking")


def test_resolve_fills_in_train_statistics_once(npz):
    path, arrays = npz
    options = resolve_arrays_options(path=str(path))
    train = arrays["split"] == "train"
    np.testing.assert_allclose(options["stats"]["text"]["mean"], arrays["text"][train].astype(np.float64).mean(0))
    np.testing.assert_allclose(
        options["stats"]["image"]["std"], arrays["image"][train].astype(np.float64).std(axis=(0, 2, 3))
    )
    assert json.loads(json.dumps(options)) == options  # plain JSON: model.json records it
    assert resolve_arrays_options(**options) == options


def test_stats_split_takes_statistics_from_another_split_array(npz, tmp_path):
    path, arrays = npz
    heldout = np.where(np.arange(N) < 40, "train", np.where(np.arange(N) < 50, "valid", "test"))
    np.savez(tmp_path / "h.npz", **arrays, heldout=heldout)
    options = resolve_arrays_options(path=str(tmp_path / "h.npz"), split="heldout", stats_split="split")
    same = resolve_arrays_options(path=str(path))["stats"]
    assert options["stats"] == same  # rows split by `heldout`, scaled as a run on `split` was
    with pytest.raises(DataError, match="no stats_split array 'fold'"):
        load_arrays(path=str(path), stats_split="fold")


def test_segment_clips_for_adamml_and_targets_of_every_task(tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    clips = rng.normal(3.0, 2.0, (n, 4, 2, 5, 5)).astype(np.float32)  # (T, C, H, W) per row
    np.savez(tmp_path / "c.npz", clip=clips, target=rng.normal(size=n), genres=rng.integers(0, 2, (n, 6)))
    info = arrays_info(path=str(tmp_path / "c.npz"), modalities=["clip"])
    assert (info.modalities["clip"].shape, info.modalities["clip"].kind, info.task.kind) == (
        (4, 2, 5, 5),
        "image",
        "regression",
    )
    stats = resolve_arrays_options(path=str(tmp_path / "c.npz"), modalities=["clip"], seed=0)["stats"]["clip"]
    assert len(stats["mean"]) == 2  # per channel C, pooled over segments and pixels
    multi = arrays_info(path=str(tmp_path / "c.npz"), target="genres", modalities=["clip"])
    assert (multi.task.kind, multi.task.num_classes) == ("multilabel", 6)
    masks = rng.integers(0, 4, (n, 5, 5))
    masks[0, 0, 0] = 255
    np.savez(tmp_path / "s.npz", image=clips[:, 0], target=masks)
    seg = arrays_info(path=str(tmp_path / "s.npz"))
    assert (seg.task.kind, seg.task.num_classes) == ("segmentation", 4)


# --- parquet and Hugging Face datasets ---------------------------------------------------------------------------


def test_parquet_columns_of_lists_are_vectors_and_tensors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    arrays = make_arrays()
    table = pa.table({name: list(values) if values.ndim == 1 else values.tolist() for name, values in arrays.items()})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=16)
    splits = load_arrays(path=str(tmp_path / "d.parquet"))
    assert isinstance(splits["train"].inputs["image"], torch.Tensor)  # parquet: read into memory
    assert_zscored(splits, arrays)


def test_datasets_save_to_disk_is_memory_mapped(tmp_path):
    datasets = pytest.importorskip("datasets")
    arrays = make_arrays()
    columns = {name: values.tolist() for name, values in arrays.items()}
    data = datasets.Dataset.from_dict(columns).cast_column("image", datasets.Array3D((2, 4, 4), "float32"))
    data.save_to_disk(str(tmp_path / "hf"))
    splits = load_arrays(path=str(tmp_path / "hf"))
    assert isinstance(splits["test"].inputs["image"], LazyRows)
    assert_zscored(splits, arrays)
    clone = pickle.loads(pickle.dumps(splits["test"].inputs["text"]))
    torch.testing.assert_close(clone[[2, 0]], splits["test"].inputs["text"][[2, 0]])
    # A DatasetDict: its keys are the splits (train / validation / test).
    parts = {
        key: datasets.Dataset.from_dict({k: v[arrays["split"] == name].tolist() for k, v in arrays.items()})
        for key, name in (("train", "train"), ("validation", "valid"), ("test", "test"))
    }
    datasets.DatasetDict(parts).remove_columns("split").save_to_disk(str(tmp_path / "hfd"))
    assert_zscored(load_arrays(path=str(tmp_path / "hfd")), arrays)


def test_missing_optional_packages_are_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "state.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now fails
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(
        ConfigError, match=r'parquet file .* needs the optional package pyarrow: pip install "dynmm\[arrow\]"'
    ):
        load_arrays(path=str(tmp_path / "d.parquet"))
    with pytest.raises(ConfigError, match=r'needs the optional package datasets: pip install "dynmm\[arrow\]"'):
        load_arrays(path=str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match=r"dynmm\[arrow\]"):
        check_files("arrays", str(tmp_path / "d.parquet"))


# --- LazyRows: listed rows, per-channel shift and scale -----------------------------------------------------------


def test_npy_rows_listed_rows_and_per_channel_affine(tmp_path):
    values = np.arange(10 * 2 * 3, dtype=np.float32).reshape(10, 2, 3)
    np.save(tmp_path / "x.npy", values)
    rows = np.array([1, 4, 5, 9])
    scale, shift = np.array([[0.5], [2.0]], np.float32), np.array([[-1.0], [1.0]], np.float32)
    lazy = NpyRows(tmp_path / "x.npy", rows=rows, scale=scale, shift=shift)
    expected = (values[rows] + shift) * scale
    assert lazy.shape == (4, 2, 3)
    np.testing.assert_array_equal(lazy[:].numpy(), expected)
    np.testing.assert_array_equal(lazy[torch.tensor([3, 0, 3])].numpy(), expected[[3, 0, 3]])
    np.testing.assert_array_equal(lazy[1:3].numpy(), expected[1:3])  # contiguous in the file: one read
    with pytest.raises(DataError, match="strictly increasing"):
        NpyRows(tmp_path / "x.npy", rows=[3, 2])
    with pytest.raises(DataError, match="does not broadcast"):
        NpyRows(tmp_path / "x.npy", scale=np.ones(4, np.float32))
    np.savez(tmp_path / "x.npz", x=values)
    member = NpyRows(tmp_path / "x.npz", member="x", rows=rows)
    np.testing.assert_array_equal(member[:].numpy(), values[rows])


# --- dynmm data check --format arrays -------------------------------------------------------------------------------


def test_check_reports_what_it_found(npz):
    path, _ = npz
    report = check_arrays(path)
    assert report.ok, report.problems
    assert report.found["text"].startswith("(60, 5) float32, memory-mapped; vector (5,), values")
    assert report.found["task"] == "classification (3 classes)"
    assert report.found["splits"] == "train 24, valid 24, test 12 (split array 'split')"
    result = CliRunner().invoke(app, ["data", "check", str(path), "--format", "arrays"])
    assert result.exit_code == 0 and "ok" in result.output


def _problems(tmp_path: Path, **changes) -> list[str]:
    arrays = {**make_arrays(), **changes}
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in arrays.items() if v is not None})
    return check_arrays(tmp_path / "bad.npz").problems


def test_check_names_every_problem(tmp_path):
    text = make_arrays()["text"]
    text[7, 0], text[3, 1], text[3, 4] = np.nan, np.inf, -np.inf
    cases = {
        "nan": dict(text=text),
        "rows": dict(image=make_arrays()["image"][:50]),
        "strings": dict(image=np.array(["a"] * N)),
        "labels": dict(split=np.array(["train", "dev", "test", "valid", "tst"] * 12)),
        "empty": dict(split=LABELS[np.arange(N) % 2]),
        "missing": dict(target=None),
        "task": dict(target=np.arange(N) - 1),
        "float": dict(target=np.full((N, 2), 0.5)),
    }
    found = {name: _problems(tmp_path, **change) for name, change in cases.items()}
    assert found["nan"] == ["modality array 'text' has 3 NaN/inf values in 2 rows (first rows [3, 7])"]
    assert found["rows"] == ["array 'image' has 50 rows but 'target' has 60; every array needs one row per sample"]
    assert found["strings"] == ["modality array 'image' holds strings (dtype <U1); a modality must be numeric"]
    assert found["labels"] == [
        "split array 'split' has 24 rows with unknown labels ['dev', 'tst'] (first rows [1, 4, 6, 9, 11]); "
        "expected train/valid/test (or validation/val) or 0/1/2"
    ]
    assert found["empty"] == ["split 'test' has no rows (split array 'split'); every split needs at least one"]
    assert len(found["missing"]) == 1 and found["missing"][0].startswith("no target array 'target' in ")
    assert found["task"] == ["a classification target holds class ids >= 0; 'target' holds -1"]
    assert len(found["float"]) == 1 and "fits no default task; set data.options.task" in found["float"][0]
    target = make_arrays()["target"].astype(np.float64)
    target[5] = np.nan
    assert _problems(tmp_path, target=target) == ["target array 'target' has 1 NaN/inf values (first rows [5])"]
    np.savez(tmp_path / "y.npz", **make_arrays())
    bad_task = check_arrays(tmp_path / "y.npz", task="multilabel").problems
    assert bad_task == ["a multilabel target has shape (N, K); 'target' has shape (60,)"]
    # The loader refuses the same files, naming the problem and pointing at the check.
    np.savez(tmp_path / "bad.npz", **{**make_arrays(), "image": make_arrays()["image"][:50]})
    with pytest.raises(DataError, match=r"array 'image' has 50 rows .*dynmm data check"):
        load_arrays(path=str(tmp_path / "bad.npz"))
    result = CliRunner().invoke(app, ["data", "check", str(tmp_path / "bad.npz"), "--format", "arrays"])
    assert result.exit_code == 1 and "problem:" in result.output


def test_check_of_a_missing_path_or_a_pickled_array(tmp_path):
    assert "does not exist" in check_arrays(tmp_path / "nowhere.npz").problems[0]
    folder = tmp_path / "f"
    folder.mkdir()
    for name, values in make_arrays().items():
        np.save(folder / f"{name}.npy", values)
    np.save(folder / "meta.npy", np.array([{"a": 1}] * N, dtype=object), allow_pickle=True)
    problems = check_arrays(folder).problems
    assert len(problems) == 1 and "meta.npy holds Python objects (pickled data)" in problems[0]
    assert check_arrays(folder, modalities=["text", "image"]).problems == problems  # still reported, not used
    assert len(load_arrays(path=str(folder), modalities=["text", "image"])["train"]) == 24


# --- end to end: the statistics a run records are the ones eval uses; DynMM on arrays ------------------------------


def _tiny(config: str, path: Path, out: Path, *extra: str):
    return load_config(
        str(CONFIGS / config),
        [
            f"--data.options.path={path}",
            f"--output_dir={out}",
            "--train.max_epochs=1",
            "--train.progress_bar=false",
            "--data.batch_size=32",
            "--model.embed_dim=8",
            "--model.encoders.default.hidden=[8]",
            *extra,
        ],
    )


def test_eval_reuses_the_recorded_statistics_after_the_file_changed(tmp_path):
    from dynmm.methods.evaluate_run import evaluate_exported
    from dynmm.methods.registry import load_exported, train_run

    arrays = make_arrays(n=90)
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    result = train_run(_tiny("static.yaml", path, tmp_path / "runs"))
    recorded = json.loads((result.run_dir / "model.json").read_text())["data"]["options"]
    train = arrays["split"] == "train"
    np.testing.assert_allclose(recorded["stats"]["text"]["mean"], arrays["text"][train].astype(np.float64).mean(0))
    assert load_exported(result.run_dir).data_config.options["stats"] == recorded["stats"]

    # Change the train rows only: statistics recomputed now would differ; the test rows did not change.
    changed = {**arrays, "text": arrays["text"].copy(), "image": arrays["image"].copy()}
    changed["text"][train] = changed["text"][train] * 10 + 5
    changed["image"][train] = changed["image"][train] - 3
    np.savez(path, **changed)
    fresh = resolve_arrays_options(path=str(path), seed=0)["stats"]
    assert not np.allclose(fresh["text"]["mean"], recorded["stats"]["text"]["mean"])
    evaluation = evaluate_exported(result.run_dir, "test")
    for name, value in evaluation.recorded.items():
        assert evaluation.metrics[name] == pytest.approx(value, abs=1e-6), name
    result_cli = CliRunner().invoke(app, ["eval", str(result.run_dir)])
    assert result_cli.exit_code == 0, result_cli.output


def test_modality_level_dynmm_on_arrays(tmp_path):
    from dynmm.methods.registry import train_run

    path = tmp_path / "data.npz"
    np.savez(path, **make_arrays(n=90))
    config = _tiny("dynmm.yaml", path, tmp_path / "runs", "--dynmm.gate_train.max_epochs=1", "--dynmm.gate.hidden=4")
    result = train_run(config)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["routing"]["fractions"]) == {"text", "late_fusion"}
    assert 0 < metrics["madds_per_sample"]
    exported = json.loads((result.run_dir / "model.json").read_text())["data"]["options"]
    assert set(exported["stats"]) == {"text", "image"}
