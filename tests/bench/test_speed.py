"""Speed benchmark plumbing: forced routings, counted MAdds per mode, JSON rows (timings are not asserted)."""

import pytest
import torch
from tests.models.test_modality_level import batch, build

from dynmm.bench.speed import forced_choice, speed_rows, tile_rows


def test_forced_choice_puts_the_requested_share_on_the_cheap_expert():
    choice = forced_choice(64, 0.25)
    assert int((choice == 0).sum()) == 16 and int((choice == 1).sum()) == 48
    assert torch.equal(choice, forced_choice(64, 0.25))  # seeded


def test_tile_rows_cycles():
    x = {"a": torch.arange(3.0)[:, None]}
    assert tile_rows(x, 7)["a"].flatten().tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_rows_report_counted_madds_of_both_modes():
    model = build()
    rows = speed_rows(model, batch(8), batch_sizes=[4], fractions=[0.5, 1.0], repeats=1)
    cheap, full = model.expert_madds
    half, all_cheap = rows
    assert half["madds_per_sample"]["masked"] == pytest.approx(model.gate_madds + cheap + full)
    assert half["madds_per_sample"]["dispatch"] == pytest.approx(model.gate_madds + (cheap + full) / 2)
    assert all_cheap["madds_per_sample"]["dispatch"] == pytest.approx(model.gate_madds + cheap)
    assert all_cheap["predicted_speedup"] > half["predicted_speedup"] > 1
    assert set(half["median_ms"]) == {"masked", "dispatch"}
