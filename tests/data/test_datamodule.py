import pytest
import torch

from dynmm.data.datamodule import MultimodalDataModule
from dynmm.errors import ConfigError

OPTIONS = {"train_size": 200, "valid_size": 40, "test_size": 50}


@pytest.fixture(scope="module")
def dm() -> MultimodalDataModule:
    module = MultimodalDataModule("avdigits", batch_size=16, seed=5, options=OPTIONS)
    module.setup("fit")
    return module


def epoch_targets(loader, batches: int = 3) -> list[int]:
    """Targets of the first batches: a fingerprint of the shuffle order."""
    return [v for _, (_, t) in zip(range(batches), loader, strict=False) for v in t.tolist()]


def test_batches_are_inputs_dict_and_target(dm: MultimodalDataModule) -> None:
    inputs, target = next(iter(dm.train_dataloader()))
    assert isinstance(inputs, dict) and set(inputs) == {"image", "audio"}
    assert inputs["image"].shape == (16, 1, 28, 28) and inputs["audio"].shape == (16, 1, 40, 101)
    assert target.shape == (16,) and target.dtype == torch.int64
    assert sum(len(t) for _, t in dm.test_dataloader()) == 50


def test_info_after_setup(dm: MultimodalDataModule) -> None:
    assert dm.info.sizes == {"train": 200, "valid": 40, "test": 50}
    assert dm.info.modalities["audio"].shape == (1, 40, 101) and dm.info.task.num_classes == 10
    with pytest.raises(RuntimeError, match="setup"):
        _ = MultimodalDataModule("mosi").info


def test_seed_reaches_the_data_set(dm: MultimodalDataModule) -> None:
    assert dm.options["seed"] == 5
    assert "seed" not in MultimodalDataModule("mosi", seed=5).options


def test_shuffle_is_seeded_and_eval_order_fixed(dm: MultimodalDataModule) -> None:
    same = MultimodalDataModule("avdigits", batch_size=16, seed=5, options=OPTIONS)
    same.setup()
    other = MultimodalDataModule("avdigits", batch_size=16, seed=6, options={**OPTIONS, "seed": 5})
    other.setup()
    assert torch.equal(other.splits["train"].target, dm.splits["train"].target)  # same data (seed 5)
    order = epoch_targets(dm.train_dataloader())
    assert order == epoch_targets(same.train_dataloader())
    assert order != dm.splits["train"].target[:48].tolist()
    assert order != epoch_targets(other.train_dataloader())
    loader = dm.train_dataloader()
    first = epoch_targets(loader)
    loader.sampler.set_epoch(1)  # Lightning tells the sampler the epoch: a new order every epoch, still seeded
    assert epoch_targets(loader) != first
    resumed = dm.train_dataloader()  # a resumed run rebuilds the loader: epoch 1's order is epoch 1's order
    resumed.sampler.set_epoch(1)
    assert epoch_targets(resumed) == epoch_targets(loader)
    loader.sampler.set_epoch(0)
    assert epoch_targets(loader) == first
    val_targets = torch.cat([t for _, t in dm.val_dataloader()])
    assert torch.equal(val_targets, dm.splits["valid"].target)


def test_mosi_module_and_bad_config() -> None:
    module = MultimodalDataModule("mosi", batch_size=32, options={"split_column": "split_heldout"})
    module.setup()
    inputs, target = next(iter(module.val_dataloader()))
    assert {k: v.shape for k, v in inputs.items()} == {"text": (32, 100), "audio": (32, 73), "video": (32, 100)}
    assert target.dtype == torch.float32
    assert module.info.sizes["test"] == 174 and module.info.task.kind == "regression"
    with pytest.raises(ConfigError, match="unknown option"):
        MultimodalDataModule("mosi", options={"seed_": 1})
    with pytest.raises(ConfigError, match="unknown data set"):
        MultimodalDataModule("cifar")
