"""AdaMML recipe end to end on tiny AV digit clips: phases, metrics and baselines, export, frozen policy in
finetune, resume, report, shared warmup, bad configs."""

import json

import pytest
from safetensors.torch import load_file

from dynmm.config import load_config
from dynmm.errors import ConfigError, DataError
from dynmm.methods.adamml.model import AdaMML
from dynmm.methods.evaluate_run import evaluate_exported
from dynmm.methods.registry import load_exported, train_run

CONFIG = "configs/avclips/adamml.yaml"
SEGMENTS = 3
CLIPS = 12
TINY = [
    "--data.options.train_size=48",
    "--data.options.valid_size=12",
    f"--data.options.test_size={CLIPS}",
    f"--data.options.segments={SEGMENTS}",
    "--data.batch_size=16",
    "--adamml.warmup_train.max_epochs=1",
    "--adamml.joint_train.max_epochs=1",
    "--adamml.finetune_train.max_epochs=1",
]
PHASES = ("warmup", "joint", "finetune")


def tiny(tmp_path, name, *extra):
    return load_config(CONFIG, [f"--output_dir={tmp_path}", f"--name={name}", *TINY, *extra])


@pytest.fixture(scope="module")
def adamml(tmp_path_factory):
    config = tiny(tmp_path_factory.mktemp("runs"), "ada")
    return config, train_run(config)


def test_phases_metrics_and_baselines(adamml):
    _, result = adamml
    run, metrics = result.run_dir, result.metrics
    for phase in PHASES:
        assert (run / phase / "done.json").is_file() and (run / phase / "weights.safetensors").is_file()
    test, costs, full = metrics["test"], metrics["costs"], metrics["full_madds_per_clip"]
    assert 0.0 <= test["accuracy"] <= 1.0 and test["clips"] == CLIPS
    assert full == pytest.approx(SEGMENTS * sum(costs["nets"].values()) + costs["fusion"])
    # Realized cost: policy + kept segments' nets, never more than every net on every segment (plus the policy).
    kept = sum(test["keep_rate"][m] * SEGMENTS * costs["nets"][m] for m in costs["nets"])
    assert test["madds_per_clip"] == pytest.approx(costs["policy"] + costs["fusion"] + kept, rel=1e-9)
    assert test["madds_per_clip"] <= full + costs["policy"]
    assert test["madds_fraction"] == pytest.approx(test["madds_per_clip"] / full)
    assert test["gmadds_per_clip"] == pytest.approx(test["madds_per_clip"] / 1e9)
    assert all(0.0 <= r <= 1.0 for r in test["keep_rate"].values())
    assert set(test["keep_rate_uninformative"]) == set(test["keep_rate_informative"]) == {"audio", "image"}
    assert 0 <= test["fallback_clips"] <= CLIPS
    for name in ("late_fusion", "audio_alone", "image_alone"):  # trained on their own, as long as AdaMML
        assert metrics["baselines"][name]["trained_alone"], name
        assert (run / "baselines" / name / "done.json").is_file()
    assert json.loads((run / "baselines" / "late_fusion" / "done.json").read_text())["epochs"] == 3
    per_segment = metrics["keep_analysis"]["keep_rate_per_segment"]
    assert all(len(rates) == SEGMENTS for rates in per_segment.values())
    for m, rates in per_segment.items():
        assert sum(rates) / SEGMENTS == pytest.approx(test["keep_rate"][m])
    by_flag = metrics["keep_analysis"]["keep_by_flag"]["image_bad"]["image"]
    assert by_flag["flagged"]["segments"] + by_flag["not_flagged"]["segments"] == CLIPS * SEGMENTS
    assert set(metrics["valid"]) >= {"accuracy", "madds_per_clip", "madds_fraction", "keep_rate"}

    base = metrics["baselines"]
    assert set(base) == {"late_fusion", "audio_alone", "image_alone", "random_policy", "final_all"}
    assert base["late_fusion"]["madds_per_clip"] == base["final_all"]["madds_per_clip"] == pytest.approx(full)
    for m in ("audio", "image"):
        alone = base[f"{m}_alone"]
        assert alone["madds_per_clip"] == pytest.approx(SEGMENTS * costs["nets"][m] + costs["fusion"])
        assert alone["keep_rate"][m] == 1.0 and sum(alone["keep_rate"].values()) == 1.0
    random = base["random_policy"]
    assert random["seeds"] == [0, 1, 2] and random["target_keep_rate"] == test["keep_rate"]
    assert random["accuracy_std"] >= 0.0 and random["madds_per_clip"] <= full
    assert all("description" in b and 0.0 <= b["accuracy"] <= 1.0 for b in base.values())
    for figure in ("pareto.png", "routing.png", "examples.png"):
        assert (run / "figures" / figure).is_file(), figure


def test_export_round_trip_matches_metrics(adamml):
    _, result = adamml
    exported = load_exported(result.run_dir)
    assert exported.model_type == "adamml" and isinstance(exported.model, AdaMML)
    assert exported.model.policy_mode == "learned" and exported.model.mode == "dispatch"
    assert exported.model.costs == result.metrics["costs"]
    evaluation = evaluate_exported(result.run_dir, "test")  # what `dynmm eval RUN` runs
    assert evaluation.metrics["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"], abs=1e-6)
    assert evaluation.metrics["loss"] == pytest.approx(result.metrics["test"]["loss"], abs=1e-5)


def test_finetune_leaves_the_policy_unchanged(adamml):
    _, result = adamml
    joint = load_file(str(result.run_dir / "joint" / "weights.safetensors"))
    final = load_file(str(result.run_dir / "model.safetensors"))
    policy = [k for k in joint if k.startswith("policy.")]
    assert policy and all(joint[k].equal(final[k]) for k in policy)  # batch-norm statistics included
    nets = [k for k in joint if k.startswith("nets.") and joint[k].is_floating_point()]
    assert any(not joint[k].equal(final[k]) for k in nets)  # the recognition nets did train


def test_resume_skips_finished_phases(adamml):
    config, result = adamml
    again = train_run(config, resume=True)
    assert again.metrics["stages"] == result.metrics["stages"]
    for phase in PHASES:
        assert sorted(p.name for p in (result.run_dir / phase / "logs").iterdir()) == ["version_0"]
    assert again.metrics["test"]["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"], abs=1e-6)


def test_report_command_rebuilds_an_adamml_report(adamml):
    from typer.testing import CliRunner

    from dynmm.cli import app

    _, result = adamml
    (result.run_dir / "report.html").unlink()
    speed = {"rows": [{"batch_size": 8, "predicted_speedup": 1.5, "realized_speedup": 1.2}]}
    (result.run_dir / "speed.json").write_text(json.dumps(speed))  # as `dynmm bench adamml-speed` writes it
    out = CliRunner().invoke(app, ["report", str(result.run_dir)])
    assert out.exit_code == 0, out.output
    page = (result.run_dir / "report.html").read_text()
    assert "AdaMML" in page and "Example test clips" in page and "random policy, same keep rate" in page
    assert "Predicted vs realized speedup" in page and (result.run_dir / "figures" / "speed.png").is_file()
    (result.run_dir / "speed.json").unlink()
    sweep = result.run_dir.parent / "sweep.json"
    point = {"lambda": 1.0, "run": "elsewhere/lambda_1", "madds_per_sample": 1e6, "metric": 0.5}
    sweep.write_text(json.dumps({"method": "adamml", "points": [point]}))
    out = CliRunner().invoke(app, ["report", str(result.run_dir), "--sweep", str(sweep)])
    assert out.exit_code == 0, out.output
    assert "λ=1" in (result.run_dir / "report.html").read_text()  # the other λ point is on the Pareto table
    sweep.write_text(json.dumps({"method": "fusion_level", "points": []}))
    out = CliRunner().invoke(app, ["report", str(result.run_dir), "--sweep", str(sweep)])
    assert isinstance(out.exception, DataError) and "not an AdaMML λ sweep" in str(out.exception)
    out = CliRunner().invoke(app, ["report", str(result.run_dir), "--baselines", str(sweep)])
    assert isinstance(out.exception, ConfigError)


def test_shared_warmup_is_trained_once(tmp_path):
    shared = tmp_path / "warmup"
    first = train_run(tiny(tmp_path, "a", f"--adamml.warmup_dir={shared}", "--adamml.resource_weight=0.1"))
    second = train_run(tiny(tmp_path, "b", f"--adamml.warmup_dir={shared}", "--adamml.resource_weight=2.0"))
    assert (shared / "done.json").is_file() and json.loads((shared / "warmup_for.json").read_text())["seed"] == 0
    assert not (first.run_dir / "warmup").exists() and not (second.run_dir / "warmup").exists()
    assert second.metrics["stages"]["warmup"] == first.metrics["stages"]["warmup"]
    late = [run.metrics["baselines"]["late_fusion"]["accuracy"] for run in (first, second)]
    assert late[0] == late[1]  # the same warmup weights
    other = tiny(tmp_path, "c", f"--adamml.warmup_dir={shared}", "--adamml.encoders.default.out_dim=8")
    with pytest.raises(ConfigError, match=r"adamml.warmup_dir .* other settings \(adamml\)"):
        train_run(other)


def test_bad_adamml_configs(tmp_path):
    with pytest.raises(ConfigError, match=r"lambdas names unknown modalities \['video'\]"):
        train_run(tiny(tmp_path, "bad", "--adamml.lambdas={video: 1.0}"))
    with pytest.raises(ConfigError, match="tau_start and tau_factor must be > 0"):
        train_run(tiny(tmp_path, "bad", "--adamml.tau_start=0"))
    with pytest.raises(ConfigError, match="at most one of the sections"):
        train_run(tiny(tmp_path, "bad", "--fusion_level={}"))
    with pytest.raises(ConfigError, match="unknown config key 'adamml.warmup_epochs'"):
        tiny(tmp_path, "bad", "--adamml.warmup_epochs=3")
    with pytest.raises(ConfigError, match="AdaMML classifies clips; this data set.s task is .regression."):
        train_run(load_config("configs/mosi/static.yaml", [f"--output_dir={tmp_path}", "--adamml={}"]))
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_finetune_optimizer_never_sees_the_policy():
    from dynmm.data.avclips import avclips_info
    from dynmm.methods.adamml.module import AdaMMLModule, build_adamml

    config = load_config(CONFIG, [f"--data.options.segments={SEGMENTS}"])
    info = avclips_info(segments=SEGMENTS)
    model = build_adamml(config.adamml, info.modalities, info.task)
    lambdas = {"audio": 1.0, "image": 1.0}
    sizes = {}
    for phase in PHASES:
        module = AdaMMLModule(model, info.task, phase, lambdas)
        optimised = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
        sizes[phase] = (model.policy_mode, any(id(p) in optimised for p in model.policy.parameters()))
    assert sizes == {"warmup": ("all", False), "joint": ("learned", True), "finetune": ("fixed", False)}


def test_speed_benchmark_counts_what_dispatch_skips(adamml):
    from dynmm.methods.adamml.speed import adamml_speed

    _, result = adamml
    (row,) = adamml_speed(result.run_dir, [4], repeats=1, keep_rates=[0.0, 1.0])["rows"]
    assert row["masked"]["madds_per_clip"] >= row["late_fusion_all"]["madds_per_clip"]  # + the policy
    assert row["dispatch"]["madds_per_clip"] <= row["masked"]["madds_per_clip"]
    assert row["predicted_speedup"] == pytest.approx(
        row["late_fusion_all"]["madds_per_clip"] / row["dispatch"]["madds_per_clip"]
    )
    never, always = row["random_keep"]["0"], row["random_keep"]["1"]
    # keep rate 0: the fallback's one segment per clip; keep rate 1: exactly late fusion (no policy runs)
    assert always["madds_per_clip"] == pytest.approx(row["late_fusion_all"]["madds_per_clip"])
    assert never["madds_per_clip"] < row["late_fusion_all"]["madds_per_clip"] / SEGMENTS


def test_speed_benchmark_refuses_other_runs(tmp_path):
    from dynmm.methods.adamml.speed import adamml_speed

    static = load_config("configs/mosi/static.yaml", [f"--output_dir={tmp_path}", "--name=s", "--train.max_epochs=1"])
    with pytest.raises(ConfigError, match="needs an AdaMML run"):
        adamml_speed(train_run(static).run_dir, [1], 1)


def test_lambda_sweep_shares_warmup_and_baselines(tmp_path):
    from typer.testing import CliRunner

    from dynmm.cli import app

    output = tmp_path / "pareto.json"
    args = ["sweep", CONFIG, "--lambdas", "0,1", "--output", str(output), f"--output_dir={tmp_path}", "--name=ad"]
    out = CliRunner().invoke(app, [*args, *TINY])
    assert out.exit_code == 0, out.output
    summary = json.loads(output.read_text())
    assert summary["method"] == "adamml" and [p["lambda"] for p in summary["points"]] == [0.0, 1.0]
    root = tmp_path / "ad_sweep"
    assert (root / "warmup" / "done.json").is_file() and (root / "baselines" / "late_fusion" / "done.json").is_file()
    for point in ("lambda_0", "lambda_1"):
        assert not (root / point / "warmup").exists() and not (root / point / "baselines").exists()
    assert {"late_fusion", "audio_alone", "image_alone", "final_all"} == set(summary["baselines"])
    assert all(0.0 <= p["madds_fraction"] for p in summary["points"])


def test_export_runs_segment_by_segment_outside_dynmm(adamml, tmp_path):
    """`dynmm export` of an AdaMML run: the policy step and each net as ONNX graphs; the runner, without dynmm
    or torch, gives dynmm's clip logits and every keep decision on the whole test split."""
    pytest.importorskip("onnxscript")
    import json

    from typer.testing import CliRunner

    from dynmm.cli import app

    _, result = adamml
    art = tmp_path / "art"
    out = CliRunner().invoke(app, ["export", str(result.run_dir), "--output", str(art)])
    assert out.exit_code == 0, out.output
    verification = json.loads((art / "verification.json").read_text())
    assert verification["passed"] and verification["batch_1_same_routing"] == 1.0
    assert verification["batch_1_max_abs_diff"] <= 1e-4 and verification["batched_max_abs_diff"] <= 1e-4
    names = {row["graph"] for row in verification["madds"]}
    assert names == {"policy", "policy_step", "net_audio", "net_image"}  # ONNX counts match FlopCounterMode
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["layout"] == "segments" and manifest["fallback"] in manifest["modalities"]
