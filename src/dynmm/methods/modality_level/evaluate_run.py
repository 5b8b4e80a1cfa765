"""`dynmm eval` of a modality-level DynMM run: metrics with the routing facts (realized MAdds, samples per
expert), at a fixed test-time cost knob β or at the β chosen on the validation split to meet a MAdds budget."""

from __future__ import annotations

from typing import Any

from dynmm.engine.export import ExportedModel
from dynmm.errors import ConfigError
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.methods.modality_level.routing_analysis import (
    beta_curve,
    beta_for_budget,
    beta_grid,
    collect_outputs,
    dispatch_results,
)
from dynmm.report.exported import Probe, exported_splits, probed, split_loader


def evaluate_routed(exported: ExportedModel, probe: Probe) -> tuple[dict[str, float], dict[str, Any]]:
    model, task, batch_size = exported.model, exported.task, exported.data_config.batch_size
    assert isinstance(model, ModalityLevelDynMM)
    splits = exported_splits(exported)
    dataset = probed(splits, probe.split, probe.noise, probe.drop)
    beta, target_madds = probe.beta, probe.target_madds
    facts: dict[str, Any] = {}
    if target_madds is not None:
        record = collect_outputs(model, split_loader(splits["valid"], batch_size))
        point = beta_for_budget(beta_curve(model, record, task, beta_grid(model, record)), target_madds)
        if point is None:
            cheapest = model.gate_madds + min(model.path_madds)
            raise ConfigError(f"--target-madds {target_madds:,.0f} is below the cheapest routing ({cheapest:,.0f})")
        beta = point["beta"]
        facts["valid_at_beta"] = point
    model.beta = beta or 0.0
    results = dispatch_results(model, split_loader(dataset, batch_size), task, missing=probe.drop)
    counts = results.choice.bincount(minlength=len(model.experts))
    facts.update(
        beta=model.beta,
        madds_per_sample=float(results.madds.mean()),
        routing=[int(c) for c in counts],
    )
    return results.metrics, facts
