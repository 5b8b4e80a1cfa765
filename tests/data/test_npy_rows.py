import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dynmm.data.base import MultimodalDataset, collate
from dynmm.data.lazy import materialize
from dynmm.data.npy_rows import NpyRows
from dynmm.errors import DataError


@pytest.fixture
def npy(tmp_path):
    path = tmp_path / "x.npy"
    values = np.arange(40 * 6, dtype=np.uint8).reshape(40, 6)
    np.save(path, values)
    return path, values


def test_rows_read_like_a_tensor(npy):
    path, values = npy
    rows = NpyRows(path, 10, 30, scale=0.5, row_shape=(2, 3))
    expected = torch.tensor(values[10:30] * 0.5, dtype=torch.float32).reshape(20, 2, 3)
    assert rows.shape == (20, 2, 3) and len(rows) == 20
    torch.testing.assert_close(rows[3], expected[3])
    torch.testing.assert_close(rows[-1], expected[-1])
    torch.testing.assert_close(rows[2:9:3], expected[2:9:3])
    torch.testing.assert_close(rows[::-1], expected.flip(0))
    assert rows[5:2].shape == (0, 2, 3)
    index = torch.tensor([7, 1, 7, 19, 0])
    torch.testing.assert_close(rows[index], expected[index])
    torch.testing.assert_close(rows.index_select(0, index), expected[index])
    mask = torch.arange(20) % 3 == 0
    torch.testing.assert_close(rows[mask], expected[mask])
    torch.testing.assert_close(materialize(rows), expected)
    assert rows[0].dtype == torch.float32
    with pytest.raises(IndexError):
        rows[20]
    with pytest.raises(IndexError):
        rows[torch.tensor([0, 25])]


def test_reading_leaves_the_file_unchanged(npy):
    path, values = npy
    rows = NpyRows(path, 0, 40)
    out = rows[:]
    out += 1  # the returned tensor is a copy, writable
    np.testing.assert_array_equal(np.load(path), values)


def test_pickled_rows_map_the_file_again_and_carry_no_data(tmp_path):
    path = tmp_path / "big.npy"
    values = np.arange(2000 * 50, dtype=np.float32).reshape(2000, 50)
    np.save(path, values)
    rows = NpyRows(path, 0, 2000)
    rows[0]  # maps the file
    blob = pickle.dumps(rows)
    assert len(blob) < 2000
    torch.testing.assert_close(pickle.loads(blob)[5], torch.from_numpy(values[5]))


def test_lazy_modality_in_a_data_set_and_loader(npy):
    path, values = npy
    data = MultimodalDataset({"x": NpyRows(path, 0, 40), "y": torch.ones(40, 2)}, torch.arange(40))
    inputs, target = next(iter(DataLoader(data, batch_size=8, shuffle=False, collate_fn=collate)))
    torch.testing.assert_close(inputs["x"], torch.tensor(values[:8], dtype=torch.float32))
    assert target.tolist() == list(range(8))
    part = data.subset([3, 1])
    torch.testing.assert_close(part.inputs["x"], torch.tensor(values[[3, 1]], dtype=torch.float32))


def test_bad_file_range_and_shape_are_clear(npy, tmp_path):
    path, _ = npy
    with pytest.raises(DataError, match="has 40 rows; rows 30..50"):
        NpyRows(path, 30, 50)
    with pytest.raises(DataError, match=r"shape \(6,\), which cannot be read as \(4, 2\)"):
        NpyRows(path, 0, 40, row_shape=(4, 2))
    with pytest.raises(DataError, match="cannot be memory-mapped"):
        NpyRows(tmp_path / "missing.npy", 0, 1)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([1, "a"], dtype=object))
    with pytest.raises(DataError, match="cannot be memory-mapped"):
        NpyRows(objects, 0, 1)
    with pytest.raises(DataError, match="has 40 rows"):
        MultimodalDataset({"x": NpyRows(path, 0, 40)}, torch.zeros(39))


def test_head_keeps_the_first_rows_lazy(tmp_path):
    """`head(n)`: a smaller split read from the same file (a benchmark's subset), for ranges and row lists."""
    from dynmm.data.npy_rows import NpyRows

    values = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.save(tmp_path / "x.npy", values)
    ranged = NpyRows(tmp_path / "x.npy", 2, 9).head(3)
    listed = NpyRows(tmp_path / "x.npy", rows=[1, 4, 6, 8]).head(2)
    assert isinstance(ranged, NpyRows) and len(ranged) == 3 and len(listed) == 2
    np.testing.assert_array_equal(ranged[:].numpy(), values[2:5])
    np.testing.assert_array_equal(listed[:].numpy(), values[[1, 4]])
