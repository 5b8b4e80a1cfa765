"""Resource-aware gate training: λ trades accuracy for cost, with the experts left untouched when frozen."""

import pytest
import torch
from tests.methods.modality_level.test_model import TASK, batch, build

from dynmm.methods.modality_level.module import DynMMGateModule

# training_step is driven by hand here, without a Trainer to receive the logged values
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def train_gate(resource_weight, steps=60):
    torch.manual_seed(0)
    model = build()
    module = DynMMGateModule(model, TASK, resource_weight=resource_weight, lr=0.05)
    expert_before = [p.clone() for p in model.experts.parameters()]
    optimizer = module.configure_optimizers()
    x = batch(64, seed=3)
    with torch.no_grad():  # targets the expensive expert gets right and the cheap one mostly does not
        target = model.experts[1].eval()(x).argmax(1)
    model.train()
    for step in range(steps):
        module.on_train_epoch_start()
        loss = module.training_step((x, target), step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        share_cheap = float((model.gate(x).choice == 0).float().mean())
    unchanged = all(torch.equal(a, b) for a, b in zip(expert_before, model.experts.parameters(), strict=True))
    return share_cheap, unchanged, model


def test_a_large_resource_weight_routes_to_the_cheap_expert_and_zero_weight_to_the_accurate_one():
    cheap_share_costly, unchanged, _ = train_gate(resource_weight=20.0)
    cheap_share_free, _, _ = train_gate(resource_weight=0.0)
    assert unchanged  # frozen experts: only the gate learned
    assert cheap_share_costly > 0.9
    assert cheap_share_free < 0.1


def test_each_weight_is_stored_once_in_the_checkpoint_state():
    _, _, model = train_gate(resource_weight=1.0, steps=1)
    keys = DynMMGateModule(model, TASK, resource_weight=1.0).state_dict().keys()
    assert all(k.startswith(("model.", "val_metrics.", "test_metrics.")) for k in keys)


def test_frozen_experts_stay_in_eval_mode_during_training():
    _, _, model = train_gate(resource_weight=1.0, steps=1)
    module = DynMMGateModule(model, TASK, resource_weight=1.0)
    model.train()
    module.on_train_epoch_start()
    assert model.gate.training and not any(m.training for m in model.experts.modules())
