"""Fine-tune a found MFAS architecture end to end: its backbones unfrozen, trained with its fusion network on
raw inputs (`mfas.finetune_epochs`).

Why: the search trains fusion layers on frozen, cached backbone features, which is what makes hundreds of
evaluations affordable; once one architecture is chosen, its backbones can adapt to the layers it reads. They
get their own, smaller learning rate (`mfas.finetune_backbone_lr`): they are trained networks, the fusion
layers are the new part. The features keep the search's standardisation, so the fusion layers start from where
the search left them.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from dynmm.data.datamodule import MultimodalDataModule
from dynmm.engine.task import task_loss
from dynmm.methods.mfas.model import MFASModel
from dynmm.report.evaluate import evaluate
from dynmm.specs import TaskSpec


def finetune_found(
    model: MFASModel,
    data: MultimodalDataModule,
    task: TaskSpec,
    epochs: int,
    lr: float,
    backbone_lr: float,
    weight_decay: float,
    device: torch.device,
    seed: int,
) -> tuple[MFASModel, dict[str, Any]]:
    """A fine-tuned copy of `model` (the given one and its backbones stay frozen) and its valid/test metrics."""
    tuned = copy.deepcopy(model).to(device)
    backbone_parameters = [p for backbone in tuned.backbone_models.values() for p in backbone.parameters()]
    for parameter in backbone_parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(
        [
            {"params": list(tuned.network.parameters()), "lr": lr},
            {"params": backbone_parameters, "lr": backbone_lr},
        ],
        weight_decay=weight_decay,
    )
    tuned.trainable = True
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tuned.train()
        for _ in range(epochs):
            for inputs, target in data.train_dataloader():
                loss = task_loss(task, tuned(inputs), target.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    tuned.trainable = False
    for parameter in backbone_parameters:
        parameter.requires_grad_(False)
    tuned = tuned.cpu().eval()
    result = {
        "epochs": epochs,
        "lr": lr,
        "backbone_lr": backbone_lr,
        "train_seconds": seconds,
        "valid": evaluate(tuned, data.val_dataloader(), task),
        "test": evaluate(tuned, data.test_dataloader(), task),
    }
    return tuned, result
