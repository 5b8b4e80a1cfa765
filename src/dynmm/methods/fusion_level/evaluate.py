"""Evaluation of fusion-level DynMM as deployed: segmentation metrics, realized MAdds (total and of the skippable
auxiliary encoder, depth unless the roles are swapped) per sample, which op each cell chose how often, and whether
the gate routes samples apart at all.

A path is a sample's full routing (one op per cell). `top_path_share` is the share of samples on the most common
path, `top_aux_stages_share` the share on the most common number of auxiliary stages run; `collapsed` is true when
one path takes more than COLLAPSE_SHARE of the samples: the gate then acts as one static model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from dynmm.engine.task import predictions
from dynmm.methods.fusion_level.model import FusionLevelDynMM
from dynmm.modes import eval_mode
from dynmm.report.metrics import build_metrics
from dynmm.specs import Batch, TaskSpec

COLLAPSE_SHARE = 0.95
"""A gate whose most common path takes more than this share of the samples is reported as collapsed."""
TOP_PATHS = 5
"""metrics.json lists this many of the most common paths."""


def path_counts(choice: Tensor, op_names: Sequence[str]) -> Counter[str]:
    """How many samples took each full path, named by its ops joined with `+` (cell 1 first)."""
    return Counter("+".join(op_names[int(o)] for o in row) for row in choice.tolist())


def routing_shares(paths: Counter[str], aux_stages_run: Sequence[int]) -> dict[str, Any]:
    """Share of the most common path and of the most common auxiliary stage count, and the collapse flag."""
    samples = sum(paths.values())
    top_path, top = paths.most_common(1)[0] if samples else ("", 0)
    share = top / samples if samples else 0.0
    return {
        "top_path": top_path,
        "top_path_share": share,
        "top_aux_stages_share": max(aux_stages_run) / samples if samples else 0.0,
        "collapsed": share > COLLAPSE_SHARE,
    }


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
    stages_run = torch.bincount(model.aux_stages_needed(choice), minlength=model.num_cells + 1).tolist()
    paths = path_counts(choice, model.op_names)
    return {
        **{name: float(value) for name, value in metrics.compute().items()},
        "madds_per_sample": float(model.realized_madds(choice, gate_ran).mean()),
        "secondary": model.secondary,
        "aux_madds_per_sample": float(model.aux_madds(choice, gate_ran).mean()),
        "aux_madds_full": model.aux_madds_full(),
        "aux_stages_run": stages_run,
        "ops_per_cell": [
            dict(zip(model.op_names, torch.bincount(choice[:, k], minlength=ops).tolist(), strict=True))
            for k in range(model.num_cells)
        ],
        "paths": dict(paths.most_common(TOP_PATHS)),
        **routing_shares(paths, stages_run),
    }
