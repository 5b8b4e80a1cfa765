"""MultiBench affect pickles: loading, checking, and refusing pickles that would run code."""

from __future__ import annotations

import builtins
import codecs
import copy
import inspect
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tests.data.fixture_affect import dump_pickle, make_affect_data, write_affect_fixture, write_affect_pickle

from dynmm.config import ModelConfig, deep_merge, from_dict, load_config, to_dict
from dynmm.data.affect import AFFECT_OPTIONS, affect_info, check_affect, load_affect
from dynmm.data.base import collate
from dynmm.data.safe_pickle import RestrictedUnpickler, allowed_globals, safe_load
from dynmm.errors import ConfigError, DataError
from dynmm.methods.modality_level.model import build_modality_level
from dynmm.methods.modality_level.recipe import check_dynmm_config, expert_run_config
from dynmm.nn.static_model import build_static_model

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"train": 24, "valid": 8, "test": 8}


@pytest.fixture(scope="module")
def raw() -> dict:
    return make_affect_data()


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_affect_fixture(tmp_path_factory.mktemp("affect") / "mosi_raw.pkl")


def _assert_matches(splits: dict, raw: dict, max_len: int | None = None) -> None:
    for split, arrays in raw.items():
        ds = splits[split]
        assert len(ds) == SIZES[split]
        replaced = np.zeros(len(ds), np.int64)
        for m in ("text", "audio", "vision"):
            expected = arrays[m] if max_len is None else arrays[m][:, -max_len:]
            got = ds.inputs[m].numpy()
            assert got.dtype == np.float32 and got.shape == expected.shape
            finite = np.isfinite(expected)
            np.testing.assert_array_equal(got[finite], expected[finite])  # nothing else changed
            assert (got[~finite] == 0).all()
            replaced += (~finite).reshape(len(ds), -1).sum(1)
        np.testing.assert_array_equal(ds.meta["nonfinite"].numpy(), replaced)
        assert ds.target.dtype == torch.float32 and ds.target.shape == (len(ds),)
        np.testing.assert_array_equal(ds.target.numpy(), arrays["labels"].reshape(-1))


def test_round_trip(fixture: Path, raw: dict) -> None:
    splits = load_affect(str(fixture))
    assert set(splits) == {"train", "valid", "test"}
    _assert_matches(splits, raw)
    # the fixture does hold -inf, +inf and NaN in audio, and the loader replaced each
    assert np.isneginf(raw["train"]["audio"]).any() and np.isnan(raw["train"]["audio"]).any()
    assert int(splits["train"].meta["nonfinite"].sum()) == 5
    inputs, target = splits["test"][2]
    assert {k: tuple(v.shape) for k, v in inputs.items()} == {"text": (50, 300), "audio": (50, 74), "vision": (50, 35)}
    assert target.shape == ()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("numpy_names", ["1.x", "2.x"])
def test_protocols_and_numpy_module_names(tmp_path: Path, raw: dict, protocol: int, numpy_names: Any) -> None:
    path = write_affect_pickle(raw, tmp_path / "a.pkl", protocol, numpy_names)
    core = b"numpy.core." if numpy_names == "1.x" else b"numpy._core."
    assert core in path.read_bytes()  # numpy's own reduce calls, under that version's module path
    _assert_matches(load_affect(path), raw)


@pytest.mark.parametrize("id_kind", ["bytes", "str", "unicode"])
def test_id_kinds_under_protocol_2(tmp_path: Path, id_kind: Any) -> None:
    path = write_affect_fixture(tmp_path / "a.pkl", protocol=2, id_kind=id_kind)
    if id_kind == "bytes":
        assert b"_codecs\nencode" in path.read_bytes()  # protocol 2 pickles bytes through _codecs.encode
    assert safe_load(path)["train"]["id"].shape == (24, 2)
    assert len(load_affect(path)["train"]) == 24


@pytest.mark.parametrize("shape", [(-1,), (-1, 1), (-1, 1, 1)])
def test_label_shapes(tmp_path: Path, raw: dict, shape: tuple[int, ...]) -> None:
    data = copy.deepcopy(raw)
    for arrays in data.values():
        arrays["labels"] = arrays["labels"].reshape(shape)
    path = write_affect_pickle(data, tmp_path / "a.pkl")
    assert check_affect(path).ok
    _assert_matches(load_affect(path), raw)


def test_info_reports_the_shapes_in_the_file(tmp_path: Path, fixture: Path) -> None:
    info = affect_info(fixture)
    assert info.name == "affect" and info.task.kind == "regression" and info.task.output_dim == 1
    assert info.sizes == SIZES
    assert {m: (s.shape, s.kind) for m, s in info.modalities.items()} == {
        "text": ((50, 300), "sequence"),
        "audio": ((50, 74), "sequence"),
        "vision": ((50, 35), "sequence"),
    }
    mosei = write_affect_fixture(tmp_path / "mosei_raw.pkl", sizes=(4, 2, 2), vision_dim=713)
    assert affect_info(mosei).modalities["vision"].shape == (50, 713)
    assert affect_info(mosei).sizes == {"train": 4, "valid": 2, "test": 2}


def test_max_len_keeps_the_last_steps(fixture: Path, raw: dict) -> None:
    _assert_matches(load_affect(fixture, max_len=20), raw, max_len=20)
    assert affect_info(fixture, max_len=20).modalities["audio"].shape == (20, 74)
    assert affect_info(fixture, max_len=80).modalities["audio"].shape == (50, 74)
    for bad in (0, -1, 2.5, True, "20"):
        with pytest.raises(ConfigError, match="max_len"):
            load_affect(fixture, max_len=bad)  # type: ignore[arg-type]


def test_options_name_the_signature() -> None:
    assert AFFECT_OPTIONS[0] == "path"
    for fn in (load_affect, affect_info):
        assert tuple(inspect.signature(fn).parameters) == AFFECT_OPTIONS


def test_check_ok_on_fixture(fixture: Path) -> None:
    report = check_affect(fixture)
    assert report.ok, report.problems
    assert report.format == "affect" and report.path == str(fixture)
    assert report.found["keys"] == "test, train, valid"
    assert report.found["train.text"] == "(24, 50, 300) float32"
    assert report.found["valid.vision"] == "(8, 50, 35) float32"
    assert report.found["test.labels"] == "(8, 1, 1) float32"
    assert report.found["train.id"] == "(24, 2) object"
    assert report.found["train.audio.nonfinite"].startswith("5 ")
    assert "train.text.nonfinite" not in report.found


def _drop(data: dict, split: str, key: str) -> None:
    del data[split][key]


def _set(split: str, key: str, fn: Any) -> Any:
    def mutate(data: dict) -> None:
        data[split][key] = fn(data[split][key])

    return mutate


BROKEN = {
    "missing split": (lambda d: d.pop("test"), "split(s) ['test'] missing; the pickle has keys ['train', 'valid']"),
    "missing array": (lambda d: _drop(d, "valid", "audio"), "[valid]: array 'audio' missing; the split has keys"),
    "mismatched N": (_set("train", "text", lambda a: a[:-1]), "disagree on the number of samples"),
    "wrong ndim": (_set("test", "vision", lambda a: a.mean(1)), "'vision' must be 3-D (samples, time, features)"),
    "time lengths": (_set("train", "audio", lambda a: a[:, :40]), "share one time length"),
    "widths across splits": (_set("test", "text", lambda a: a[:, :, :200]), "an earlier split (50, 300)"),
    "label shape": (_set("train", "labels", lambda a: np.repeat(a.reshape(-1, 1), 2, 1)), "(N,), (N, 1) or (N, 1, 1)"),
    "label range": (_set("valid", "labels", lambda a: a * 2), "must lie in [-3, 3]"),
    "label nan": (_set("valid", "labels", lambda a: np.where(a > 0, np.nan, a)), "'labels' holds"),
    "object features": (_set("train", "text", lambda a: a.astype(object)), "'text' must hold numbers"),
    "list instead of array": (_set("train", "audio", lambda a: a.tolist()), "must be a numpy array"),
    "empty split": (lambda d: d.update(valid={k: v[:0] for k, v in d["valid"].items()}), "the split is empty"),
    "split not a dict": (lambda d: d.update(test=[1, 2]), "[test]: expected a dict of arrays, got list"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_and_load_report_broken_files(tmp_path: Path, raw: dict, case: str) -> None:
    mutate, message = BROKEN[case]
    data = copy.deepcopy(raw)
    mutate(data)
    path = write_affect_pickle(data, tmp_path / "broken.pkl")
    report = check_affect(path)
    assert not report.ok
    assert any(message in p for p in report.problems), report.problems
    with pytest.raises(DataError) as err:
        load_affect(path)
    assert message in str(err.value) and str(path) in str(err.value)
    with pytest.raises(DataError):
        affect_info(path)


def test_top_level_not_a_dict(tmp_path: Path) -> None:
    path = write_affect_pickle([1, 2, 3], tmp_path / "list.pkl")
    assert "the pickle holds a list, expected a dict" in check_affect(path).problems[0]
    with pytest.raises(DataError, match="holds a list"):
        load_affect(path)


def test_missing_truncated_and_non_pickle_files(tmp_path: Path, fixture: Path) -> None:
    missing = tmp_path / "nope.pkl"
    with pytest.raises(DataError, match="nope.pkl not found"):
        load_affect(missing)
    assert "file not found" in check_affect(missing).problems[0]
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(fixture.read_bytes()[:100_000])
    garbage = tmp_path / "notes.pkl"
    garbage.write_text("train,valid,test\n1,2,3\n")
    for path in (truncated, garbage):
        with pytest.raises(DataError, match="is not a readable pickle") as err:
            load_affect(path)
        assert err.value.__cause__ is None and err.value.__suppress_context__  # one clear line, no chain
        report = check_affect(path)
        assert not report.ok and "is not a readable pickle" in report.problems[0]
    with pytest.raises(DataError, match="truncated"):
        load_affect(truncated)
    with pytest.raises(ConfigError, match="path"):
        load_affect(3)  # type: ignore[arg-type]


# --- security: a pickle that would run code is refused before anything runs ---------------------------------


class _Call:
    """Pickles as `fn(*args)`: what a malicious file does with `__reduce__`."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def _qualname(fn: Any) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _exec_marker(marker: Path) -> _Call:
    return _Call(builtins.exec, f"open({str(marker)!r}, 'w').close()")


def _payload(case: str, raw: dict, marker: Path) -> Any:
    """A pickle-able object that would create `marker` under plain pickle.load."""
    if case == "top level os.system":
        return _Call(os.system, f"touch {marker}")
    data = copy.deepcopy(raw)
    if case == "exec nested in a split":
        data["valid"]["extra"] = {"notes": [1, 2, _exec_marker(marker)]}
    else:  # an element of an object array: numpy unpickles it as an ordinary object, through find_class
        data["test"]["id"] = np.array([b"ok", _exec_marker(marker)], dtype=object)
    return data


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize(
    ("case", "refused"),
    [
        ("top level os.system", _qualname(os.system)),
        ("exec nested in a split", "builtins.exec"),
        ("exec in an object array", "builtins.exec"),
    ],
)
def test_code_execution_payloads_are_refused(tmp_path: Path, raw: dict, protocol: int, case: str, refused: str) -> None:
    marker = tmp_path / "pwned"
    path = write_affect_pickle(_payload(case, raw, marker), tmp_path / "evil.pkl", protocol)
    if protocol < 3:  # Python 3 writes builtins under their Python 2 name in protocols 0-2
        refused = refused.replace("builtins.", "__builtin__.")
    assert refused.rsplit(".", 1)[1].encode() in path.read_bytes()  # the payload is in the file
    for load in (load_affect, affect_info, safe_load):
        with pytest.raises(DataError) as err:
            load(path)
        assert f"refused to unpickle {refused}" in str(err.value) and str(path) in str(err.value)
    report = check_affect(path)  # reported, not raised
    assert not report.ok and f"refused to unpickle {refused}" in report.problems[0]
    assert not marker.exists()  # nothing ran


def test_the_payload_is_live_under_plain_pickle(tmp_path: Path) -> None:
    """Control: the same bytes do run code under pickle.loads, so the refusal above is what protects."""
    marker = tmp_path / "pwned"
    data = pickle.dumps(_exec_marker(marker))
    pickle.loads(data)  # noqa: S301 - deliberate, writes a file in tmp_path
    assert marker.exists()


@pytest.mark.parametrize(
    ("payload", "refused"),
    [
        (_Call(np.load, "/etc/passwd"), "numpy.load"),
        (_Call(np.testing.assert_equal, 1, 1), "numpy.testing._private.utils.assert_equal"),
        (_Call(np.frombuffer, b"\0" * 8), "numpy.frombuffer"),
        (_Call(getattr, "text", "upper"), "builtins.getattr"),
        (_Call(pickle.loads, b"x"), "_pickle.loads"),
        # codecs.encode pickles as _codecs.encode, which is allowed, but for latin-1 text only
        (_Call(codecs.encode, "x", "rot13"), "_codecs.encode(str, 'rot13')"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_globals_outside_the_allowlist_are_refused(tmp_path: Path, payload: _Call, refused: str) -> None:
    path = write_affect_pickle({"train": {"text": payload}}, tmp_path / "x.pkl", protocol=4)
    with pytest.raises(DataError) as err:
        safe_load(path)
    assert f"refused {'' if '(' in refused else 'to unpickle '}{refused}" in str(err.value)
    assert str(path) in str(err.value)


def test_protocol_0_inst_and_persistent_ids_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    inst = tmp_path / "inst.pkl"
    inst.write_bytes(f"(S'touch {marker}'\nios\nsystem\n.".encode())  # INST os.system, protocol 0
    with pytest.raises(DataError, match=r"refused to unpickle os\.system"):
        safe_load(inst)
    persistent = tmp_path / "pid.pkl"
    persistent.write_bytes(b"Pfoo\n.")
    with pytest.raises(DataError, match="persistent id"):
        safe_load(persistent)
    assert not marker.exists()


def test_allowlist_is_explicit_and_small() -> None:
    allowed = allowed_globals()
    for core in ("numpy.core", "numpy._core"):
        assert (f"{core}.multiarray", "_reconstruct") in allowed
        assert (f"{core}.multiarray", "scalar") in allowed
        assert (f"{core}.numeric", "_frombuffer") in allowed
    assert {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("__builtin__", "bytes")} <= set(allowed)
    assert len(allowed) == 2 + 6 + 1 + 10
    assert all(not m.startswith(("os", "posix", "subprocess", "sys")) for m, _ in allowed)
    assert ("builtins", "eval") not in allowed and ("builtins", "getattr") not in allowed
    # numpy scalars and the allowed builtins round-trip
    obj = {"s": np.float32(1.5), "c": 1 + 2j, "set": {1, 2}, "b": b"\x00\xff", "ba": bytearray(b"ab"), "t": (1, None)}
    for protocol in (2, 4, 5):
        assert RestrictedUnpickler(io.BytesIO(dump_pickle(obj, protocol)), "<bytes>").load() == obj


# --- configs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "vision_dim"), [("mosi_dynmm.yaml", 35), ("mosei_dynmm.yaml", 35), ("mosei_dynmm.yaml", 713)]
)
def test_configs_build_against_the_fixture(tmp_path: Path, name: str, vision_dim: int) -> None:
    path = write_affect_fixture(tmp_path / "a.pkl", sizes=(6, 2, 2), vision_dim=vision_dim)
    config = load_config(ROOT / "configs" / "affect" / name, [f"--data.options.path={path}"])
    assert config.data.name == "affect" and config.data.batch_size == 32 and config.dynmm is not None
    assert set(config.data.options) <= set(AFFECT_OPTIONS)
    check_dynmm_config(config)
    info = affect_info(**config.data.options)
    experts = []
    for expert in config.dynmm.experts:
        model_config = from_dict(ModelConfig, deep_merge(to_dict(config.model), expert.model))
        assert expert_run_config(config, expert, tmp_path).model == model_config  # what stage I trains
        experts.append(build_static_model(model_config, info.modalities, info.task))
    assert [e.name for e in config.dynmm.experts] == ["text", "late_fusion"]
    torch.manual_seed(0)
    model = build_modality_level(experts, config.dynmm.gate, info.modalities)
    assert type(model.gate).__name__ == "TransformerGate"
    assert model.expert_madds[0] < model.expert_madds[1]  # text-only is the cheap expert
    inputs, _ = collate([load_affect(path)["train"][i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        assert model(inputs).shape == (4, 1)
    model.train()
    assert model(inputs).shape == (4, 1)
