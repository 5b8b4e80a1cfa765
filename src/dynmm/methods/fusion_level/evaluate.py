"""Evaluation of fusion-level DynMM as deployed: segmentation metrics, realized MAdds (total and of the skippable
auxiliary encoder, depth unless the roles are swapped) per sample, and which op each cell chose how often."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import torch

from dynmm.engine.task import predictions
from dynmm.methods.fusion_level.model import FusionLevelDynMM
from dynmm.modes import eval_mode
from dynmm.report.metrics import build_metrics
from dynmm.specs import Batch, TaskSpec


@torch.no_grad()
def evaluate_fusion_level(
    model: FusionLevelDynMM, batches: Iterable[Batch], task: TaskSpec, missing: Collection[str] = ()
) -> dict[str, Any]:
    """Metrics, MAdds and op counts of the model as deployed (told which modalities are missing)."""
    metrics = build_metrics(task)
    gate_ran = not (model.routing_is_fixed or model.secondary in missing)
    choices = []
    with eval_mode(model):
        for inputs, target in batches:
            outputs = model(inputs, missing=missing)
            metrics.update(predictions(task, outputs), target)
            assert model.last_choice is not None
            choices.append(model.last_choice.cpu())
    choice = torch.cat(choices)
    ops = len(model.op_names)
    return {
        **{name: float(value) for name, value in metrics.compute().items()},
        "madds_per_sample": float(model.realized_madds(choice, gate_ran).mean()),
        "secondary": model.secondary,
        "aux_madds_per_sample": float(model.aux_madds(choice, gate_ran).mean()),
        "aux_madds_full": model.aux_madds_full(),
        "aux_stages_run": torch.bincount(model.aux_stages_needed(choice), minlength=model.num_cells + 1).tolist(),
        "ops_per_cell": [
            dict(zip(model.op_names, torch.bincount(choice[:, k], minlength=ops).tolist(), strict=True))
            for k in range(model.num_cells)
        ],
    }
