"""Where the bundled data live, so that a fresh clone works and one variable can point elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

from dynmm.errors import DataError

ENV_VAR = "DYNMM_DATA_DIR"
"""Environment variable that overrides the repository's `data/` folder."""


def data_root() -> Path:
    """The data folder: `$DYNMM_DATA_DIR` if set, else `data/` at the repository root."""
    override = os.environ.get(ENV_VAR)
    root = Path(override) if override else Path(__file__).resolve().parents[3] / "data"
    if not root.is_dir():
        how = f"set by {ENV_VAR}" if override else f"set {ENV_VAR} to the folder that holds the data"
        raise DataError(f"data folder {root} does not exist ({how})")
    return root


def data_file(*parts: str) -> Path:
    """Path of one bundled file under the data folder; fails early with the full path if it is missing."""
    root = data_root()
    path = root.joinpath(*parts)
    if not path.is_file():
        raise DataError(f"data file {path} is missing (data folder {root}; override with {ENV_VAR})")
    return path
