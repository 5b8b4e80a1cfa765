"""MultimodalDataset reads a DataLoader batch with one indexing per modality (`__getitems__`): the batches are
exactly those of reading row by row, for tensors and for rows read from a file, and other collate functions
still see samples."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

from dynmm.data.base import MultimodalDataset, SampleBatch, collate
from dynmm.data.npy_rows import NpyRows


def _row_by_row(dataset: MultimodalDataset, order: list[int]):
    return collate([dataset[i] for i in order])


def test_batched_reads_equal_row_by_row_reads(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "b.npy", rng.normal(size=(30, 3, 4)).astype(np.float32))
    dataset = MultimodalDataset(
        {"a": torch.randn(30, 5), "b": NpyRows(tmp_path / "b.npy", rows=list(range(0, 30)), shift=0.5, scale=2.0)},
        torch.arange(30),
    )
    order = torch.randperm(30, generator=torch.Generator().manual_seed(1)).tolist()
    loader = DataLoader(dataset, batch_size=7, sampler=order, collate_fn=collate)
    starts = range(0, 30, 7)
    for start, (inputs, target) in zip(starts, loader, strict=True):
        expected_inputs, expected_target = _row_by_row(dataset, order[start : start + 7])
        assert torch.equal(target, expected_target)
        for key in inputs:
            assert torch.equal(inputs[key], expected_inputs[key]), key


def test_another_collate_function_still_sees_samples():
    dataset = MultimodalDataset({"a": torch.randn(6, 2)}, torch.arange(6))
    batch = dataset.__getitems__([4, 1])
    assert isinstance(batch, SampleBatch) and len(batch) == 2
    inputs, target = default_collate(list(batch))
    assert torch.equal(inputs["a"], dataset.inputs["a"][[4, 1]]) and target.tolist() == [4, 1]
