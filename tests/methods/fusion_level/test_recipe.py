"""Fusion-level recipe end to end on tiny synthetic RGB-D data: stages, metrics, export, static baselines."""

import pytest

from dynmm.config import load_config
from dynmm.errors import ConfigError
from dynmm.methods.evaluate_run import evaluate_exported
from dynmm.methods.registry import load_exported, train_run

CONFIG = "configs/rgbd_synth/dynmm_fusion.yaml"
TINY = [
    "--data.options.train_size=32",
    "--data.options.valid_size=8",
    "--data.options.test_size=8",
    "--data.options.height=32",
    "--data.options.width=48",
    "--fusion_level.supernet_train.max_epochs=1",
    "--fusion_level.gate_train.max_epochs=1",
    "--train.max_epochs=1",
]


def tiny(tmp_path, name, *extra):
    return load_config(CONFIG, [f"--output_dir={tmp_path}", f"--name={name}", *TINY, *extra])


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory):
    return train_run(tiny(tmp_path_factory.mktemp("runs"), "dyn"))


def test_two_stages_metrics_and_export(dynamic):
    run = dynamic.run_dir
    for stage in ("supernet", "gate"):
        assert (run / stage / "done.json").is_file()
    test = dynamic.metrics["test"]
    assert 0.0 <= test["miou"] <= 1.0 and 0.0 <= test["pixel_accuracy"] <= 1.0
    assert test["aux_madds_per_sample"] <= test["aux_madds_full"]
    assert sum(test["aux_stages_run"]) == 8 and all(sum(c.values()) == 8 for c in test["ops_per_cell"])
    assert load_exported(run).model_type == "fusion_level"
    betas = dynamic.metrics["beta_curve"]
    assert betas[-1]["aux_madds_per_sample"] <= betas[0]["aux_madds_per_sample"]  # β pushes to cheaper ops
    flagged = dynamic.metrics["by_flag"]["depth_pairs"]
    assert sum(group["scenes"] for group in flagged.values()) == 8
    assert sum(sum(group["aux_stages_run"]) for group in flagged.values()) == 8
    missing = dynamic.metrics["robustness"]["missing_aux"]
    assert missing["aux_madds_per_sample"] == 0.0
    for figure in ("pareto.png", "routing.png", "examples.png", "robustness_0.png"):
        assert (run / "figures" / figure).is_file(), figure
    evaluation = evaluate_exported(run, "test")
    assert evaluation.metrics["miou"] == pytest.approx(test["miou"], abs=1e-6)


def test_rgb_only_baseline_never_runs_the_depth_encoder(dynamic, tmp_path):
    rgb_only = train_run(tiny(tmp_path, "rgb", "--fusion_level.static_op=identity")).metrics["test"]
    assert rgb_only["aux_madds_per_sample"] == 0.0
    assert rgb_only["aux_stages_run"] == [8, 0, 0, 0, 0]
    everywhere = train_run(tiny(tmp_path, "add", "--fusion_level.static_op=add")).metrics["test"]
    assert everywhere["aux_madds_per_sample"] == everywhere["aux_madds_full"]
    assert rgb_only["madds_per_sample"] < everywhere["madds_per_sample"]


def test_depth_only_baseline_swaps_the_roles(tmp_path):
    run = train_run(tiny(tmp_path, "depth", "--fusion_level.primary=depth", "--fusion_level.static_op=identity"))
    test = run.metrics["test"]
    assert test["secondary"] == "rgb" and test["aux_madds_per_sample"] == 0.0
    without_rgb = run.metrics["robustness"]["missing_aux"]  # RGB missing changes nothing for depth only
    assert without_rgb["miou"] == pytest.approx(test["miou"], abs=1e-6)
    assert load_exported(run.run_dir).model.primary == "depth"
    assert "rgb-encoder MAdds per sample" in (run.run_dir / "report.html").read_text()


def test_report_command_rebuilds_a_fusion_level_report(dynamic):
    from typer.testing import CliRunner

    from dynmm.cli import app

    (dynamic.run_dir / "report.html").unlink()
    out = CliRunner().invoke(app, ["report", str(dynamic.run_dir)])
    assert out.exit_code == 0, out.output
    assert "Example segmentations" in (dynamic.run_dir / "report.html").read_text()


def test_bad_fusion_level_configs(tmp_path):
    with pytest.raises(ConfigError, match="static_op 'sum' is not among the cell ops"):
        train_run(tiny(tmp_path, "bad", "--fusion_level.static_op=sum"))
    with pytest.raises(ConfigError, match="needs `rgb` and `depth` image modalities"):
        train_run(load_config("configs/mosi/static.yaml", [f"--output_dir={tmp_path}", "--fusion_level={}"]))


def test_speed_benchmark_counts_what_dispatch_skips(dynamic):
    from dynmm.methods.fusion_level.speed import fusion_level_speed

    (row,) = fusion_level_speed(dynamic.run_dir, [4], repeats=1)["rows"]
    assert row["madds_per_sample"]["dispatch"] <= row["madds_per_sample"]["masked"]
    assert row["predicted_speedup"] >= 1.0 and row["median_ms"]["dispatch"] > 0


def test_speed_benchmark_refuses_other_runs(tmp_path):
    from dynmm.methods.fusion_level.speed import fusion_level_speed

    static = load_config("configs/mosi/static.yaml", [f"--output_dir={tmp_path}", "--name=s", "--train.max_epochs=1"])
    with pytest.raises(ConfigError, match="needs a fusion-level DynMM run"):
        fusion_level_speed(train_run(static).run_dir, [1], 1)


def test_lambda_sweep_trains_the_supernet_once(tmp_path):
    import json

    from typer.testing import CliRunner

    from dynmm.cli import app

    output = tmp_path / "pareto.json"
    args = ["sweep", CONFIG, "--lambdas", "0,0.5", "--output", str(output)]
    out = CliRunner().invoke(app, [*args, f"--output_dir={tmp_path}", "--name=fl", *TINY])
    assert out.exit_code == 0, out.output
    summary = json.loads(output.read_text())
    assert summary["method"] == "fusion_level" and [p["lambda"] for p in summary["points"]] == [0.0, 0.5]
    root = tmp_path / "fl_sweep"
    assert (root / "supernet" / "done.json").is_file()
    assert not any((root / point / "supernet").exists() for point in ("lambda_0", "lambda_0.5"))
    stages = [json.loads((root / p / "metrics.json").read_text())["stages"] for p in ("lambda_0", "lambda_0.5")]
    assert stages[0]["supernet"] == stages[1]["supernet"]  # the second point loaded the first one's supernet
    for point in summary["points"]:
        assert point["aux_madds_per_sample"] <= summary["aux_madds_full"]
        routing = point["routing"]  # the run's own routing histograms and collapse flag, carried per λ
        assert sum(routing["aux_stages_run"]) == 8 and isinstance(routing["collapsed"], bool)
        assert routing["collapsed"] == point["test"]["collapsed"] == (routing["top_path_share"] > 0.95)
    from dynmm.methods.fusion_level.report import baseline_points

    found = {p["name"]: p["gated"] for p in baseline_points(root / "lambda_0", tmp_path)}
    assert found == {"fl_sweep/lambda_0.5": True}  # sweep points are found one level down, not the run itself
    out = CliRunner().invoke(app, ["report", str(root / "lambda_0"), "--baselines", str(tmp_path)])
    assert out.exit_code == 0, out.output
    page = (root / "lambda_0" / "report.html").read_text()
    assert "<td>DynMM</td><td>fl_sweep/lambda_0.5</td>" in page  # another λ point is drawn as a DynMM point
    other = tiny(tmp_path, "other", f"--fusion_level.supernet_dir={root / 'supernet'}", "--fusion_level.gate_width=4")
    with pytest.raises(ConfigError, match=r"supernet_dir .* other settings \(fusion_level\)"):
        train_run(other)


def test_rebuilding_a_report_names_what_is_wrong(dynamic, tmp_path):
    from dynmm.engine.export import load_finished
    from dynmm.errors import DataError
    from dynmm.methods.adamml.export import ADAMML_BUILDERS
    from dynmm.methods.adamml.model import AdaMML
    from dynmm.methods.fusion_level.export import FUSION_LEVEL_BUILDERS
    from dynmm.methods.fusion_level.model import FusionLevelDynMM

    with pytest.raises(DataError, match="is missing: is .* a finished fusion-level DynMM run"):
        load_finished(tmp_path, FUSION_LEVEL_BUILDERS, FusionLevelDynMM, "beta_curve", "fusion-level DynMM")
    with pytest.raises(DataError, match="has no AdaMML analysis"):
        load_finished(dynamic.run_dir, ADAMML_BUILDERS, AdaMML, "baselines", "AdaMML")
    with pytest.raises(DataError, match=r"holds a fusion_level model \(AdaMML expected\)"):
        load_finished(dynamic.run_dir, ADAMML_BUILDERS, AdaMML, "beta_curve", "AdaMML")


def test_bench_export_times_the_exported_graph_against_a_static_fusion(dynamic, tmp_path):
    pytest.importorskip("onnxscript")
    import json

    from typer.testing import CliRunner

    from dynmm.cli import app

    run_dir = dynamic.run_dir
    out = tmp_path / "latency.json"
    result = CliRunner().invoke(
        app, ["bench", "export", str(run_dir), "--requests", "20", "--threads", "1", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    bench = json.loads(out.read_text())
    assert bench["baseline"].startswith("static fusion") and min(bench["madds"].values()) > 0
    assert {s["runtime"] for s in bench["settings"]} == {"onnxruntime", "eager"}
    for setting in bench["settings"]:
        assert setting["dynamic"]["requests"] == 20 and setting["baseline"]["p50_ms"] > 0


def test_init_weights_load_local_torchvision_checkpoints_into_both_encoders(tmp_path):
    """fusion_level.init_weights: each modality's encoder starts from a local torchvision-named checkpoint (the
    ImageNet start of ESANet and DynMM); depth's 1-channel stem gets the summed RGB kernels."""
    import torch
    from safetensors.torch import save_file
    from tests.nn.test_resnet import _as_torchvision_state_dict

    from dynmm.methods.fusion_level.model import FusionLevelDynMM
    from dynmm.methods.fusion_level.recipe import init_encoders
    from dynmm.nn.resnet import ResNetEncoder

    torch.manual_seed(0)
    source = ResNetEncoder(3, "tiny")
    save_file(_as_torchvision_state_dict(source), str(tmp_path / "imagenet.safetensors"))
    torch.save({"state_dict": _as_torchvision_state_dict(source)}, tmp_path / "imagenet.pth")
    model = FusionLevelDynMM("tiny", 5, (32, 48), decoder_width=16, gate_width=8)
    init_encoders(model, {"rgb": str(tmp_path / "imagenet.safetensors"), "depth": str(tmp_path / "imagenet.pth")})
    for key, value in source.state_dict().items():
        if key != "stem.0.weight":
            torch.testing.assert_close(model.main.state_dict()[key], value)
            torch.testing.assert_close(model.aux.state_dict()[key], value)
    torch.testing.assert_close(model.aux.stem[0].weight, source.stem[0].weight.sum(dim=1, keepdim=True))
    with pytest.raises(ConfigError, match=r"init_weights names 'thermal'"):
        init_encoders(model, {"thermal": str(tmp_path / "imagenet.pth")})
    with pytest.raises(ConfigError, match=r"fusion_level.init_weights.rgb: weights file .* not found"):
        init_encoders(model, {"rgb": str(tmp_path / "missing.safetensors")})
