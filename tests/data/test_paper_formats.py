"""The papers' formats through the registry, the CLI and a real training run, on fixture files in those formats."""

import json

import numpy as np
import pytest
from tests.data.fixture_affect import write_affect_fixture
from tests.data.fixture_avmnist import write_avmnist_fixture
from tests.data.fixture_mmimdb import write_mmimdb_fixture
from tests.data.fixture_nyuv2 import make_content, write_mat
from tests.test_cli import run_cli

from dynmm.config import load_config
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.data.registry import FORMATS, check_files, load_dataset
from dynmm.errors import ConfigError
from dynmm.methods.registry import train_run


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("formats")
    return {
        "mmimdb": write_mmimdb_fixture(tmp / "multimodal_imdb.hdf5"),
        "affect": write_affect_fixture(tmp / "mosi_raw.pkl"),
        "avmnist": write_avmnist_fixture(tmp / "avmnist", train=60, test=20),
        "nyuv2": write_mat(tmp / "nyu", make_content()),
        "arrays": _write_arrays(tmp / "my_data.npz"),
    }


def _write_arrays(path):
    """A user's own arrays (`data.name: arrays`): two modalities, a target and a split array."""
    rng = np.random.default_rng(0)
    n = 40
    split = np.array(["train"] * 24 + ["valid"] * 8 + ["test"] * 8)
    np.savez(path, a=rng.normal(size=(n, 5)), b=rng.normal(size=(n, 3, 4)), target=rng.integers(0, 3, n), split=split)
    return path


def test_every_format_is_registered_with_a_check(fixtures):
    assert sorted(FORMATS) == sorted(fixtures)
    for name, path in fixtures.items():
        options = {"path": str(path)} | ({"valid_size": 10} if name == "avmnist" else {})
        splits = load_dataset(name, **options)
        assert set(splits) == {"train", "valid", "test"} and all(len(s) > 0 for s in splits.values())
        report = check_files(name, str(path))
        assert report.format == name and report.found


def test_a_path_is_required_and_unknown_formats_are_named():
    with pytest.raises(ConfigError, match="set data.options.path"):
        MultimodalDataModule("mmimdb", 8, 0, 0, {}).setup()
    with pytest.raises(ConfigError, match="unknown format 'imdb'"):
        check_files("imdb", ".")


def test_cli_data_check_exit_codes(fixtures, tmp_path):
    good = run_cli("data", "check", str(fixtures["affect"]), "--format", "affect")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok" in good.stdout and "train.text" in good.stdout
    broken = tmp_path / "image"
    broken.mkdir()
    (tmp_path / "image" / "train_data.npy").write_bytes(b"not a npy file")
    bad = run_cli("data", "check", str(tmp_path), "--format", "avmnist")
    assert bad.returncode == 1
    assert "problem:" in bad.stdout and "Traceback" not in bad.stdout + bad.stderr


@pytest.mark.parametrize(
    ("config", "name", "extra"),
    [
        ("configs/avmnist/static.yaml", "avmnist", ["--data.options.valid_size=10"]),
        ("configs/mmimdb/static.yaml", "mmimdb", ["--train.limit_train_batches=2"]),
        (
            "configs/affect/mosi_dynmm.yaml",
            "affect",
            ["--dynmm.expert_train.max_epochs=1", "--dynmm.gate_train.max_epochs=1"],
        ),
    ],
)
def test_paper_configs_train_on_fixtures(fixtures, tmp_path, config, name, extra):
    """One short run per format (the affect one is the whole DynMM recipe: experts, gate, evaluation): data
    through the registry and Lightning, metrics of the right task."""
    overrides = [
        f"--output_dir={tmp_path}",
        f"--data.options.path={fixtures[name]}",
        "--data.batch_size=8",
        "--data.num_workers=0",
        "--train.max_epochs=1",
        "--train.progress_bar=false",
        "--train.accelerator=cpu",
        *extra,
    ]
    run_config = load_config(config, overrides)
    if run_config.dynmm is not None:  # the affect DynMM recipe: its experts' stage alone is enough here
        run_config = load_config(
            config, overrides + ["--dynmm.expert_train.max_epochs=1", "--dynmm.gate_train.max_epochs=1"]
        )
    result = train_run(run_config)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    expected = {"mmimdb": "f1_micro", "affect": "acc2", "avmnist": "accuracy"}[name]
    assert np.isfinite(metrics["test"][expected]) and metrics["madds_per_sample"] > 0
