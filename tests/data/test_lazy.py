import pickle

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dynmm.data.base import MultimodalDataset, collate
from dynmm.data.lazy import H5Rows, materialize
from dynmm.errors import DataError


@pytest.fixture
def h5(tmp_path):
    path = tmp_path / "x.h5"
    values = np.arange(40 * 3, dtype=np.float64).reshape(40, 3)
    with h5py.File(path, "w") as f:
        f["x"] = values
    return path, values


def test_rows_read_like_a_tensor(h5):
    path, values = h5
    rows = H5Rows(path, "x", 10, 30, scale=0.5)
    expected = torch.tensor(values[10:30] * 0.5, dtype=torch.float32)
    assert rows.shape == (20, 3) and len(rows) == 20
    torch.testing.assert_close(rows[3], expected[3])
    torch.testing.assert_close(rows[-1], expected[-1])
    torch.testing.assert_close(rows[2:9:3], expected[2:9:3])
    index = torch.tensor([7, 1, 7, 19, 0])
    torch.testing.assert_close(rows[index], expected[index])
    torch.testing.assert_close(materialize(rows), expected)
    with pytest.raises(IndexError):
        rows[20]
    with pytest.raises(IndexError):
        rows[torch.tensor([0, 25])]


def test_pickled_rows_reopen_the_file(h5):
    path, values = h5
    rows = H5Rows(path, "x", 0, 40)
    rows[0]  # opens the file
    clone = pickle.loads(pickle.dumps(rows))
    torch.testing.assert_close(clone[5], torch.tensor(values[5], dtype=torch.float32))


def test_lazy_modality_in_a_data_set_and_loader(h5):
    path, values = h5
    data = MultimodalDataset({"x": H5Rows(path, "x", 0, 40), "y": torch.ones(40, 2)}, torch.arange(40))
    inputs, target = next(iter(DataLoader(data, batch_size=8, shuffle=False, collate_fn=collate)))
    torch.testing.assert_close(inputs["x"], torch.tensor(values[:8], dtype=torch.float32))
    assert target.tolist() == list(range(8))
    part = data.subset([3, 1])
    torch.testing.assert_close(part.inputs["x"], torch.tensor(values[[3, 1]], dtype=torch.float32))


def test_missing_key_and_bad_range_are_clear(h5):
    path, _ = h5
    with pytest.raises(DataError, match="has no dataset 'vgg'"):
        H5Rows(path, "vgg", 0, 1)
    with pytest.raises(DataError, match="has 40 rows; rows 30..50"):
        H5Rows(path, "x", 30, 50)
    with pytest.raises(DataError, match="has 40 rows"):
        MultimodalDataset({"x": H5Rows(path, "x", 0, 40)}, torch.zeros(39))
