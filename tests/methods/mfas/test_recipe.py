"""`dynmm search mfas` end to end on MOSI, shrunk to seconds: files, numbers that must agree, resume, refusals."""

import json

import pytest
import torch
from tests.test_cli import run_cli

from dynmm.config import load_config
from dynmm.engine.stages import data_module, stage_data
from dynmm.errors import ConfigError
from dynmm.methods.mfas.model import load_found
from dynmm.methods.mfas.recipe import run_mfas_search, search_device, search_metric
from dynmm.methods.registry import load_exported
from dynmm.report.evaluate import evaluate
from dynmm.specs import TaskSpec

CONFIG = "configs/mosi/mfas.yaml"
SMALL = [
    "--train.max_epochs=1",
    "--mfas.layers=2",
    "--mfas.first_step_samples=6",
    "--mfas.samples_per_step=3",
    "--mfas.search_seeds=[0]",
    "--mfas.top_k=2",
    "--mfas.final_epochs=2",
    "--mfas.timing_architectures=1",
    "--mfas.finetune_epochs=1",
]


def small(tmp_path, *extra):
    return load_config(CONFIG, [f"--output_dir={tmp_path}", *SMALL, *extra])


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mfas")
    messages = []
    summary = run_mfas_search(small(tmp), tmp / "out.json", progress=messages.append)
    return summary, tmp, messages


def test_summary_files_and_budgets(searched):
    summary, tmp, _ = searched
    run_dir = tmp / "mosi_mfas"
    assert json.loads((tmp / "out.json").read_text()) == json.loads((run_dir / "mfas.json").read_text())
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.yaml",
        "backbones",
        "feature_cache",
        "searches",
        "best",
        "timing.json",
        "mfas.json",
        "report.html",
    }
    mfas, random = summary["searches"]
    assert (mfas["kind"], random["kind"]) == ("mfas", "random")
    assert len(mfas["evaluations"]) == len(random["evaluations"]) == 6 + 3
    assert summary["metric"] == "acc2" and summary["modalities"] == ["text", "audio", "video"]
    assert len(summary["surrogate"]) == 2 and summary["timing"]["speedup"] > 0
    for e in mfas["evaluations"] + random["evaluations"]:
        assert 0 <= e["score"] <= 1 and e["madds"] > e["fusion_madds"] > 0


def test_madds_are_backbone_prefixes_plus_the_fusion(searched):
    summary, _, _ = searched
    prefix = summary["space"]["backbone_prefix_madds"]
    for e in summary["searches"][0]["evaluations"]:
        backbone = sum(
            max(prefix[m][layer[i]] for layer in e["architecture"]) for i, m in enumerate(summary["modalities"])
        )
        assert e["madds"] == backbone + e["fusion_madds"]


def test_found_model_reproduces_its_test_score_on_raw_data(searched):
    summary, tmp, _ = searched
    run_dir = tmp / "mosi_mfas"
    backbones = {m: load_exported(run_dir / "backbones" / m).model for m in summary["modalities"]}
    model = load_found(run_dir / "best", backbones)
    config = small(tmp)
    data = data_module(config, stage_data(config, config.mfas.search_data))
    with torch.no_grad():
        metrics = evaluate(model, data.test_dataloader(), data.info.task)
    assert metrics["acc2"] == pytest.approx(summary["best"]["test"]["acc2"], abs=1e-6)
    assert metrics["mae"] == pytest.approx(summary["best"]["test"]["mae"], abs=1e-5)


def test_finetuned_model_trains_its_backbones_and_reloads_to_its_scores(searched):
    """best_finetuned/ holds the best architecture trained end to end: its own backbone weights (the backbone
    runs stay as they were) and its test metrics, which the reloaded model reproduces on raw data."""
    summary, tmp, _ = searched
    run_dir = tmp / "mosi_mfas"
    tuned = summary["best"]["finetuned"]
    assert tuned["epochs"] == 1 and set(tuned) >= {"valid", "test", "train_seconds"}
    backbones = {m: load_exported(run_dir / "backbones" / m).model for m in summary["modalities"]}
    original = {m: {k: v.clone() for k, v in b.state_dict().items()} for m, b in backbones.items()}
    model = load_found(run_dir / "best_finetuned", backbones)
    changed = [
        m
        for m in backbones
        if any(not torch.equal(v, original[m][k]) for k, v in model.backbone_models[m].state_dict().items())
    ]
    assert changed, "fine-tuning left every backbone as it was"
    for m, b in backbones.items():  # the given models are copied, not overwritten
        assert all(torch.equal(v, original[m][k]) for k, v in b.state_dict().items())
    config = small(tmp)
    data = data_module(config, stage_data(config, config.mfas.search_data))
    with torch.no_grad():
        metrics = evaluate(model, data.test_dataloader(), data.info.task)
    assert metrics["mae"] == pytest.approx(tuned["test"]["mae"], abs=1e-5)


def test_restart_redoes_nothing_and_a_changed_config_is_refused(searched):
    summary, tmp, _ = searched
    messages = []
    again = run_mfas_search(small(tmp), None, progress=messages.append)
    assert again["searches"] == summary["searches"]
    assert not any("step" in m for m in messages)
    assert again["best"]["finetuned"] == summary["best"]["finetuned"]  # read back, not retrained
    with pytest.raises(ConfigError, match=r"another configuration \(mfas.width\)"):
        run_mfas_search(small(tmp, "--mfas.width=4"), None, progress=messages.append)


def test_backbone_runs_must_be_unimodal_runs_of_that_modality(searched):
    _, tmp, _ = searched
    text_run = tmp / "mosi_mfas" / "backbones" / "text"
    config = small(tmp, "--name=other", f"--mfas.backbone_runs={{audio: {text_run}}}")
    with pytest.raises(ConfigError, match="not a static model of 'audio' alone"):
        run_mfas_search(config, None, progress=lambda m: None)


def test_cli_refuses_a_config_without_mfas_section(tmp_path):
    result = run_cli("search", "mfas", "configs/mosi/static.yaml", f"--output_dir={tmp_path}")
    assert result.returncode == 2
    assert "needs a config with an `mfas` section" in " ".join(result.stdout.split())


def test_device_option():
    assert search_device("cpu") == torch.device("cpu")
    assert search_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="not a device"):
        search_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            search_device("cuda")


def test_search_metric_must_be_a_bounded_score():
    config = load_config(CONFIG, ["--mfas.metric=mae"])
    with pytest.raises(ConfigError, match="one of \\('acc2'"):
        search_metric(config, TaskSpec("regression"))
    with pytest.raises(ConfigError, match="segmentation task"):
        search_metric(config, TaskSpec("segmentation", 5))
    assert search_metric(load_config(CONFIG, []), TaskSpec("classification", 3)) == "accuracy"
