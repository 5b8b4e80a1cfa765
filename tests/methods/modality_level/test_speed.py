"""Speed benchmark plumbing: forced and trained routings, counted MAdds and peak memory per mode, JSON rows
(timings are not asserted: they depend on the machine)."""

import json
from types import SimpleNamespace

import pytest
import torch
from tests.methods.modality_level.test_model import batch, build
from torch import nn
from typer.testing import CliRunner

from dynmm.cli import app
from dynmm.errors import ConfigError
from dynmm.methods.modality_level.speed import (
    forced_choice,
    memory_table,
    parse_modes,
    peak_memory_bytes,
    speed_rows,
    tile_rows,
    time_table,
    trained_rows,
)

FOUR_MB = 4_000_000  # bytes
FLOATS = FOUR_MB // 4  # float32 elements in 4 MB


def test_forced_choice_puts_the_requested_share_on_the_cheap_expert():
    choice = forced_choice(64, 0.25)
    assert int((choice == 0).sum()) == 16 and int((choice == 1).sum()) == 48
    assert torch.equal(choice, forced_choice(64, 0.25))  # seeded
    assert set(forced_choice(8, 0.5, expensive=3).tolist()) == {0, 3}


def test_tile_rows_cycles():
    x = {"a": torch.arange(3.0)[:, None]}
    assert tile_rows(x, 7)["a"].flatten().tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_rows_report_counted_madds_of_every_mode():
    model = build()
    rows = speed_rows(model, batch(8), batch_sizes=[4], fractions=[0.5, 1.0], repeats=1)
    cheap, full = model.expert_madds
    half, all_cheap = rows
    everything = model.gate_madds + cheap + full
    assert half["madds_per_sample"]["dense"] == pytest.approx(everything)
    assert half["madds_per_sample"]["masked"] == pytest.approx(everything)
    assert half["madds_per_sample"]["dispatch"] == pytest.approx(model.gate_madds + (cheap + full) / 2)
    assert all_cheap["madds_per_sample"]["dispatch"] == pytest.approx(model.gate_madds + cheap)
    predicted = all_cheap["predicted_speedup"]
    assert predicted["vs_dense"] == pytest.approx(everything / (model.gate_madds + cheap))
    assert predicted["vs_masked"] == predicted["vs_dense"] > half["predicted_speedup"]["vs_masked"] > 1
    assert half["routing"] == "forced" and half["cheap_fraction"] == half["target_cheap_fraction"] == 0.5
    for key in ("madds_per_sample", "median_ms", "peak_memory_bytes"):
        assert set(half[key]) == {"dense", "masked", "dispatch"}
    assert set(half["realized_speedup"]) == {"vs_dense", "vs_masked"}


def test_forced_rows_report_the_share_that_really_went_cheap():
    (row,) = speed_rows(build(), batch(8), batch_sizes=[1], fractions=[0.25], repeats=1, modes=["dispatch"])
    assert (row["cheap_fraction"], row["target_cheap_fraction"]) == (0.0, 0.25)  # 0 of 1 row


def test_a_subset_of_modes_reports_only_their_speedups():
    rows = speed_rows(build(), batch(8), batch_sizes=[4], fractions=[0.5], repeats=1, modes=["masked", "dispatch"])
    assert set(rows[0]["median_ms"]) == {"masked", "dispatch"} and set(rows[0]["realized_speedup"]) == {"vs_masked"}
    (dense_only,) = speed_rows(build(), batch(8), batch_sizes=[4], fractions=[0.5], repeats=1, modes=["dense"])
    assert dense_only["predicted_speedup"] == {} == dense_only["realized_speedup"]


def _two_live_tensors() -> float:
    a = torch.ones(FLOATS)
    b = torch.ones(FLOATS)
    return float(a[0] + b[0])


def _one_after_the_other() -> float:
    a = torch.ones(FLOATS)
    first = float(a[0])
    del a
    b = torch.ones(FLOATS)
    return first + float(b[0])


def test_cpu_peak_memory_follows_allocations_and_frees_in_time_order():
    assert 2 * FOUR_MB <= peak_memory_bytes(_two_live_tensors) < 2 * FOUR_MB + 2**16  # both held at once
    assert FOUR_MB <= peak_memory_bytes(_one_after_the_other) < FOUR_MB + 2**16  # the first is freed before the second
    kept = torch.ones(FLOATS)
    assert peak_memory_bytes(lambda: float(kept[0])) < 2**16  # memory live before the call is not the call's


def test_dispatch_holds_less_memory_than_dense_when_the_full_expert_is_skipped():
    (row,) = speed_rows(build(), batch(256), batch_sizes=[256], fractions=[1.0], repeats=1)
    peaks = row["peak_memory_bytes"]
    assert peaks["dispatch"] * 2 < peaks["dense"]
    assert peaks["dispatch"] >= 256 * 4 * 4  # at least the (256, 4) float32 output
    assert row["dense_tensor_bytes"] == 256 * 2 * 4 * 4  # (256, 2 experts, 4) float32, for reference
    assert row["peak_memory_ratio"]["vs_dense"] == pytest.approx(peaks["dense"] / peaks["dispatch"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_memory_counts_a_known_tensor():
    device = torch.device("cuda")
    assert FOUR_MB <= peak_memory_bytes(lambda: torch.ones(FLOATS, device=device).sum(), device) < FOUR_MB + 2**16


def _set_gate_bias(model: nn.Module, bias: list[float]) -> None:
    last = model.gate.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(bias))


def test_trained_rows_use_the_gates_own_choices():
    model = build()
    cheap, full = model.expert_madds
    _set_gate_bias(model, [10.0, -10.0])  # the gate sends every row to the cheap expert
    (row,) = trained_rows(model, batch(8), batch_sizes=[16], repeats=1)
    assert row["routing"] == "trained" and row["cheap_fraction"] == 1.0
    assert row["madds_per_sample"]["dispatch"] == pytest.approx(model.gate_madds + cheap)
    _set_gate_bias(model, [-10.0, 10.0])  # ... and now to the full one
    (row,) = trained_rows(model, batch(8), batch_sizes=[16], repeats=1)
    assert row["cheap_fraction"] == 0.0
    assert row["madds_per_sample"]["dispatch"] == pytest.approx(model.gate_madds + full)
    assert row["predicted_speedup"]["vs_dense"] == pytest.approx(
        (model.gate_madds + cheap + full) / row["madds_per_sample"]["dispatch"]
    )


def test_trained_rows_follow_the_test_time_cost_knob():
    model = build()
    model.beta = 100.0  # argmax(logits − β·cost): every row on the cheap expert, as model(x) would route it
    (row,) = trained_rows(model, batch(8), batch_sizes=[8], repeats=1)
    assert row["cheap_fraction"] == 1.0
    assert row["madds_per_sample"]["dispatch"] == pytest.approx(model.gate_madds + model.expert_madds[0])


def test_trained_rows_report_the_observed_share_of_a_mixed_routing():
    model, x = build(), batch(8)
    with torch.no_grad():
        share = float((model.gate(tile_rows(x, 32)).choice == 0).float().mean())
    (row,) = trained_rows(model, x, batch_sizes=[32], repeats=1)
    assert row["cheap_fraction"] == pytest.approx(share)


def test_a_soft_gate_has_nothing_to_dispatch():
    model = build()
    model.gate.mode = "soft"
    with pytest.raises(ConfigError, match="soft gate"):
        trained_rows(model, batch(8), batch_sizes=[4], repeats=1)


def test_run_must_hold_a_modality_level_dynmm(monkeypatch, tmp_path):
    import dynmm.engine.timing as timing

    monkeypatch.setattr(
        timing, "load_export", lambda run_dir, builders: SimpleNamespace(model=nn.Linear(2, 2), model_type="static")
    )
    result = CliRunner().invoke(app, ["bench", "speed", "--run", str(tmp_path), "--output", str(tmp_path / "s.json")])
    assert isinstance(result.exception, ConfigError) and "Linear" in str(result.exception)


def test_modes_are_parsed_in_canonical_order_and_checked():
    assert parse_modes("dispatch,dense,dispatch") == ["dense", "dispatch"]
    with pytest.raises(ConfigError, match="--modes"):
        parse_modes("dense,sparse")
    result = CliRunner().invoke(app, ["bench", "speed", "--modes", "sparse"])
    assert isinstance(result.exception, ConfigError)


def test_tables_have_a_column_per_mode_and_speedup():
    rows = speed_rows(build(), batch(8), batch_sizes=[4], fractions=[0.5], repeats=1, modes=["masked", "dispatch"])
    (cells,) = time_table({"rows": rows}, ["masked", "dispatch"])
    assert list(cells) == [
        "batch",
        "routing",
        "cheap",
        "MAdds M masked",
        "MAdds M dispatch",
        "ms masked",
        "ms dispatch",
        "pred. vs masked",
        "real. vs masked",
    ]
    assert cells["routing"] == "forced" and cells["pred. vs masked"].endswith("×")
    (memory,) = memory_table({"rows": rows}, ["masked", "dispatch"])
    assert float(memory["peak MiB masked"]) == pytest.approx(rows[0]["peak_memory_bytes"]["masked"] / 2**20, abs=0.01)
    ratio = rows[0]["peak_memory_bytes"]["masked"] / rows[0]["peak_memory_bytes"]["dispatch"]
    assert memory["peak masked / dispatch"] == f"{ratio:.2f}×" and memory["dense tensor KiB"] == "0.1"  # 4·2·4·4 B


def _export_tiny_avdigits_dynmm(directory):
    from dynmm.config import DataConfig, GateConfig, ModelConfig
    from dynmm.data.registry import dataset_info
    from dynmm.engine.export import export_model
    from dynmm.methods.modality_level.export import dynmm_sections
    from dynmm.methods.modality_level.model import build_modality_level
    from dynmm.nn.static_model import build_static_model

    options = {"seed": 0, "train_size": 20, "valid_size": 10, "test_size": 16}
    info = dataset_info("avdigits", **options)
    encoders = {"default": {"kind": "cnn", "channels": [4]}}
    configs = [
        ("image", ModelConfig(fusion="unimodal", modalities=["image"], encoders=encoders)),
        ("late", ModelConfig(fusion="late_mean", encoders=encoders)),
    ]
    experts = [build_static_model(cfg, info.modalities, info.task) for _, cfg in configs]
    gate = GateConfig(hidden=8)
    model = build_modality_level(experts, gate, info.modalities)
    data = DataConfig(name="avdigits", options=options)
    sections = dynmm_sections(configs, gate)
    export_model(directory, model, configs[1][1], data, info.modalities, info.task, None, "dynmm", sections)


def test_bench_speed_on_an_exported_run_times_its_gate_and_the_forced_shares(tmp_path):
    _export_tiny_avdigits_dynmm(tmp_path)
    args = ["bench", "speed", "--run", str(tmp_path), "--batch-sizes", "8", "--cheap-fraction", "0.5"]
    result = CliRunner().invoke(app, [*args, "--repeats", "1", "--modes", "masked,dispatch"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "speed.json").read_text())
    assert results["modes"] == ["masked", "dispatch"]
    trained, forced = results["models"][tmp_path.name]["rows"]
    assert (trained["routing"], forced["routing"], forced["cheap_fraction"]) == ("trained", "forced", 0.5)
    assert set(trained["peak_memory_bytes"]) == {"masked", "dispatch"} and set(trained["realized_speedup"]) == {
        "vs_masked"
    }


def test_a_device_that_is_not_there_is_named():
    from dynmm.errors import ConfigError
    from dynmm.methods.modality_level.speed import resolve_device

    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="is not a torch device"):
        resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA GPU"):
            resolve_device("cuda")
