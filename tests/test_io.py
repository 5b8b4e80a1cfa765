"""Atomic writes keep the old file when writing fails half-way."""

import json

import pytest

from dynmm.io import atomic_write, atomic_write_json


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"acc": 0.9})

    def crash(tmp):
        tmp.write_text('{"acc": 0.')  # half-written
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"acc": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_written_files_get_ordinary_permissions(tmp_path):
    import os

    from dynmm.io import atomic_write_text

    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
