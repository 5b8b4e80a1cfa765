import dataclasses

import pytest
import torch
from tests.methods.mfas.conftest import TASK

from dynmm.methods.mfas.evaluate_architecture import FusionTraining, WeightStore, score, train_architecture
from dynmm.methods.mfas.model import MFASModel
from dynmm.methods.mfas.space import LayerChoice
from dynmm.report.evaluate import evaluate

TRAINING = FusionTraining(width=8, epochs=3, lr=1e-2, weight_decay=0.0, batch_size=16)
ARCH = (LayerChoice((2, 2), 0), LayerChoice((3, 3), 2))


def test_training_learns_and_is_seeded(space, cache):
    first = train_architecture(space, ARCH, cache, TASK, TRAINING, seed=3, splits=("train", "valid"))
    again = train_architecture(space, ARCH, cache, TASK, TRAINING, seed=3, splits=("train", "valid"))
    assert first.metrics == again.metrics
    untrained = train_architecture(space, ARCH, cache, TASK, TRAINING, seed=3, splits=("train",), epochs=0)
    assert first.metrics["train"]["loss"] < untrained.metrics["train"]["loss"]
    assert first.train_seconds > 0


def test_score_matches_the_end_to_end_model_on_raw_data(space, cache, backbones, splits):
    result = train_architecture(space, ARCH, cache, TASK, TRAINING, seed=0, splits=("test",))
    model = MFASModel(backbones, cache.standardizers, result.network)
    batches = [
        ({m: x[i : i + 16] for m, x in splits["test"].inputs.items()}, splits["test"].target[i : i + 16])
        for i in range(0, len(splits["test"]), 16)
    ]
    end_to_end = evaluate(model, batches, TASK)
    for name, value in score(result.network, cache, "test", TASK).items():
        assert abs(end_to_end[name] - value) < 1e-5, name


def test_weight_sharing_by_position_and_shape(space, cache, tmp_path):
    store = WeightStore()
    trained = train_architecture(space, ARCH, cache, TASK, TRAINING, seed=0, store=store)
    assert set(k.split("/")[0] for k in store.tensors) == set(trained.network.shared_modules())
    # Same first layer shape at position 0 and the same head: both start from the stored weights.
    other = (LayerChoice((2, 2), 1),)
    fresh = train_architecture(space, other, cache, TASK, TRAINING, seed=1, epochs=0)
    assert store.load_into(fresh.network) == 2
    torch.testing.assert_close(fresh.network.layers[0].weight, trained.network.layers[0].weight)
    torch.testing.assert_close(fresh.network.head.bias, trained.network.head.bias)
    # A different input width at position 0 shares only the head.
    wider = train_architecture(space, (LayerChoice((1, 2), 0),), cache, TASK, TRAINING, seed=1, epochs=0)
    assert store.load_into(wider.network) == 1
    path = tmp_path / "shared.safetensors"
    store.write(path)
    assert WeightStore.read(path).tensors.keys() == store.tensors.keys()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_matches_cpu(space, cache):
    on_gpu = dataclasses.replace(TRAINING, device=torch.device("cuda"))
    store = WeightStore()
    gpu = train_architecture(space, ARCH, cache, TASK, on_gpu, seed=3, store=store)
    cpu = train_architecture(space, ARCH, cache, TASK, TRAINING, seed=3)
    assert gpu.metrics["valid"]["loss"] == pytest.approx(cpu.metrics["valid"]["loss"], rel=1e-3)
    assert all(t.device.type == "cpu" for t in store.tensors.values())
