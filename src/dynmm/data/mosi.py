"""CMU-MOSI utterance features (text, audio, video) with the continuous sentiment score as target.

Read data/mosi/SOURCE.md before drawing conclusions: text and video features of the `split` train/valid rows
are "seen" features, so `valid` overstates `test`; `split_heldout` keeps only unseen videos.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from dynmm.data.base import DatasetInfo, MultimodalDataset
from dynmm.data.paths import data_file
from dynmm.errors import ConfigError, DataError
from dynmm.specs import ModalitySpec, TaskSpec

MOSI_FILE = ("mosi", "mosi_utterance.npz")
MODALITIES = {"text": 100, "audio": 73, "video": 100}
SPLITS = ("train", "valid", "test")
SPLIT_COLUMNS = ("split", "split_heldout")
TASK = TaskSpec("regression")
STD_FLOOR = 1e-6
"""Train std below this marks a feature constant on train: it is centred but not scaled, because dividing by
a tiny std would blow up the rows where it varies (e.g. `split_heldout` video: up to 1e5 on valid/test)."""


def _check_split_column(split_column: str) -> None:
    if split_column not in SPLIT_COLUMNS:
        raise ConfigError(f"MOSI split_column {split_column!r} is unknown; choose from {list(SPLIT_COLUMNS)}")


def _read(*split_columns: str) -> dict[str, np.ndarray]:
    path = data_file(*MOSI_FILE)
    keys = list(dict.fromkeys((*MODALITIES, "label", *split_columns)))
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise DataError(f"{path} lacks the arrays {missing}")
        return {k: npz[k] for k in keys}


def load_mosi(split_column: str = "split", stats_split_column: str | None = None) -> dict[str, MultimodalDataset]:
    """Train/valid/test splits of `split_column`, each modality z-scored with the train-row statistics of
    `stats_split_column` (default: the same column).

    Why two columns: a DynMM gate trained on `split_heldout` rows must feed its experts (trained on `split`)
    features scaled exactly as the experts saw them in training.
    """
    stats_column = stats_split_column or split_column
    _check_split_column(split_column)
    _check_split_column(stats_column)
    arrays = _read(split_column, stats_column)
    split = arrays[split_column]
    train = arrays[stats_column] == "train"
    out: dict[str, MultimodalDataset] = {}
    stats = {}
    for key, dim in MODALITIES.items():
        x = arrays[key].astype(np.float64)
        if x.shape != (len(split), dim):
            raise DataError(f"MOSI {key} has shape {x.shape}, expected ({len(split)}, {dim})")
        std = x[train].std(0)
        stats[key] = (x[train].mean(0), np.where(std < STD_FLOOR, 1.0, std))
    for name in SPLITS:
        rows = split == name
        inputs = {
            key: torch.from_numpy(((arrays[key][rows] - mean) / std).astype(np.float32))
            for key, (mean, std) in stats.items()
        }
        target = torch.from_numpy(arrays["label"][rows].astype(np.float32))
        out[name] = MultimodalDataset(inputs, target)
    return out


def statistics_column(options: Mapping[str, object]) -> object:
    """The split column whose train rows z-score every modality under these `load_mosi` options
    (`stats_split_column`, else `split_column`, else the default "split")."""
    return options.get("stats_split_column") or options.get("split_column") or "split"


def mosi_info(split_column: str = "split", stats_split_column: str | None = None) -> DatasetInfo:
    """Shapes and split sizes without building the tensors."""
    _check_split_column(split_column)
    _check_split_column(stats_split_column or split_column)
    split = _read(split_column)[split_column]
    modalities = {k: ModalitySpec(k, (d,), "vector") for k, d in MODALITIES.items()}
    return DatasetInfo("mosi", modalities, TASK, {s: int((split == s).sum()) for s in SPLITS})
