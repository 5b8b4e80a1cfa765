"""Data sets by name, so that configs and the CLI can ask for one with options and get clear errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from dynmm.data.affect import AFFECT_OPTIONS, affect_info, check_affect, load_affect
from dynmm.data.arrays import arrays_info, load_arrays, resolve_arrays_options
from dynmm.data.arrays_check import check_arrays
from dynmm.data.arrays_plan import ARRAYS_OPTIONS
from dynmm.data.avclips import AVClipsOptions, avclips_info, load_avclips
from dynmm.data.avdigits import AVDigitsOptions, avdigits_info, load_avdigits
from dynmm.data.avmnist import AVMNIST_OPTIONS, avmnist_info, check_avmnist, load_avmnist
from dynmm.data.base import DatasetInfo, MultimodalDataset
from dynmm.data.check import CheckReport
from dynmm.data.mmimdb import MMIMDB_OPTIONS, check_mmimdb, load_mmimdb, mmimdb_info
from dynmm.data.mosi import load_mosi, mosi_info
from dynmm.data.nyuv2 import NYUV2_OPTIONS, check_nyuv2, load_nyuv2, nyuv2_info
from dynmm.data.rgbd_synth import RGBDSynthOptions, load_rgbd_synth, rgbd_synth_info
from dynmm.errors import ConfigError

Loader = Callable[..., dict[str, MultimodalDataset]]


@dataclass(frozen=True)
class _Entry:
    """`check` is set for data sets read from a user's files (the papers' formats, generic arrays): `dynmm data
    check` runs it, and `dynmm data info` lists them without reading anything (they need `path`).
    `resolve`, where set, returns the options with what the loader derives from the data once filled in (e.g.
    z-score statistics of the train rows), so that a run records them and evaluation and export reuse them."""

    loader: Loader
    info: Callable[..., DatasetInfo]
    options: tuple[str, ...]
    check: Callable[..., CheckReport] | None = None
    resolve: Callable[..., dict[str, object]] | None = None

    @property
    def external(self) -> bool:
        return self.check is not None


_ENTRIES: dict[str, _Entry] = {
    "mosi": _Entry(load_mosi, mosi_info, ("split_column", "stats_split_column")),
    "avdigits": _Entry(load_avdigits, avdigits_info, ("seed", *(f.name for f in fields(AVDigitsOptions)))),
    "avclips": _Entry(load_avclips, avclips_info, ("seed", *(f.name for f in fields(AVClipsOptions)))),
    "rgbd_synth": _Entry(load_rgbd_synth, rgbd_synth_info, ("seed", *(f.name for f in fields(RGBDSynthOptions)))),
    # The papers' formats, read from a user's files (data.options.path).
    "mmimdb": _Entry(load_mmimdb, mmimdb_info, MMIMDB_OPTIONS, check_mmimdb),
    "affect": _Entry(load_affect, affect_info, AFFECT_OPTIONS, check_affect),
    "avmnist": _Entry(load_avmnist, avmnist_info, AVMNIST_OPTIONS, check_avmnist),
    "nyuv2": _Entry(load_nyuv2, nyuv2_info, NYUV2_OPTIONS, check_nyuv2),
    # Generic: a researcher's own arrays (.npz, .npy folder, parquet, Hugging Face datasets folder).
    "arrays": _Entry(load_arrays, arrays_info, ARRAYS_OPTIONS, check_arrays, resolve_arrays_options),
}

DATASETS: dict[str, Loader] = {name: entry.loader for name, entry in _ENTRIES.items()}
"""Name -> loader returning {"train", "valid", "test"} MultimodalDatasets."""

BUNDLED = [name for name, entry in _ENTRIES.items() if not entry.external]
"""Data sets that work on a fresh clone (bundled files or generated)."""

FORMATS = [name for name, entry in _ENTRIES.items() if entry.external]
"""Data sets read from a user's files (the papers' formats and generic `arrays`); their options include `path`."""


def _entry(name: str, options: Mapping[str, object]) -> _Entry:
    if name not in _ENTRIES:
        raise ConfigError(f"unknown data set {name!r}; known: {sorted(_ENTRIES)}")
    entry = _ENTRIES[name]
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for data set {name!r}; accepted: {list(entry.options)}")
    return entry


def check_options(name: str, options: Mapping[str, object]) -> None:
    """Raise ConfigError for an unknown data set name or option, before any data are read."""
    _entry(name, options)


def accepted_options(name: str) -> tuple[str, ...]:
    """Option names `load_dataset(name, ...)` accepts."""
    return _entry(name, {}).options


def _needs_path(name: str, entry: _Entry, options: Mapping[str, object]) -> None:
    if entry.external and not options.get("path"):
        raise ConfigError(
            f"data set {name!r} is read from your files: set data.options.path (see `dynmm data check PATH "
            f"--format {name}` and the README's 'Running the paper setups')"
        )


def load_dataset(name: str, **options: object) -> dict[str, MultimodalDataset]:
    """Load the train/valid/test splits of a registered data set."""
    entry = _entry(name, options)
    _needs_path(name, entry, options)
    return entry.loader(**options)


def resolve_options(name: str, options: Mapping[str, object]) -> dict[str, object]:
    """`options` with what the data set derives from its data once filled in (e.g. `arrays`' z-score statistics
    of the train rows); unchanged for data sets that derive nothing. `load_dataset` with the result reads the
    same values without recomputing them, which is how a run's export pins its preprocessing."""
    entry = _entry(name, options)
    if entry.resolve is None:
        return dict(options)
    _needs_path(name, entry, options)
    return entry.resolve(**options)


def dataset_info(name: str, **options: object) -> DatasetInfo:
    """Modalities, task and split sizes of a registered data set, without building its tensors."""
    entry = _entry(name, options)
    _needs_path(name, entry, options)
    return entry.info(**options)


def check_files(format_name: str, path: str, **options: object) -> CheckReport:
    """Validate a user's files for one of the `FORMATS` without training anything; `options` are the data
    set's other options (e.g. `target` for `arrays`), as in `data.options`."""
    entry = _ENTRIES.get(format_name)
    if entry is None or entry.check is None:
        raise ConfigError(f"unknown format {format_name!r}; choose from {FORMATS}")
    if options:
        _entry(format_name, {"path": path, **options})
    return entry.check(path, **options)
