"""A recipe's stages: the run's `train` and `data` sections with one stage's overrides merged in."""

from __future__ import annotations

from typing import Any

from dynmm.config import DataConfig, RunConfig, TrainConfig, deep_merge, from_dict, to_dict
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.engine.fit import check_train_config


def stage_train(config: RunConfig, overrides: dict[str, Any] | None, where: str) -> TrainConfig:
    """The run's `train` section with a stage's overrides merged in."""
    train = from_dict(TrainConfig, deep_merge(to_dict(config.train), overrides or {}), where)
    check_train_config(train, where)
    return train


def stage_data(config: RunConfig, overrides: dict[str, Any] | None) -> DataConfig:
    return from_dict(DataConfig, deep_merge(to_dict(config.data), overrides or {}), "data")


def data_module(config: RunConfig, data: DataConfig) -> MultimodalDataModule:
    module = MultimodalDataModule(data.name, data.batch_size, data.num_workers, config.seed, data.options)
    module.setup()
    return module
