"""Loading exported models (`load_exported`: model.json + model.safetensors) and found MFAS models
(`load_found`): every kind of damage is a DataError naming the file (and the key or tensor), a failing load
never touches the files, and nothing is ever unpickled (grep for torch.load in src)."""

from __future__ import annotations

import copy
import json
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from dynmm.config import DataConfig, GateConfig, ModelConfig
from dynmm.engine.export import export_model
from dynmm.errors import DataError
from dynmm.methods.adamml.config import AdaMMLConfig
from dynmm.methods.adamml.module import build_adamml
from dynmm.methods.fusion_level.config import FusionLevelConfig
from dynmm.methods.fusion_level.model import build_fusion_level
from dynmm.methods.mfas.model import DESCRIPTION as MFAS_DESCRIPTION
from dynmm.methods.mfas.model import WEIGHTS as MFAS_WEIGHTS
from dynmm.methods.mfas.model import load_found, save_found
from dynmm.methods.mfas.space import to_json
from dynmm.methods.modality_level.export import dynmm_sections
from dynmm.methods.modality_level.model import build_modality_level
from dynmm.methods.registry import load_exported
from dynmm.nn.static_model import build_static_model
from dynmm.specs import ModalitySpec, TaskSpec

SRC = Path(__file__).resolve().parents[2] / "src"
SPECS = {"text": ModalitySpec("text", (6,), "vector"), "audio": ModalitySpec("audio", (4,), "vector")}
TASK = TaskSpec("classification", 3)
ENCODERS = {"default": {"kind": "mlp", "hidden": []}}
CONFIG = ModelConfig(fusion="late_mean", embed_dim=4, encoders=ENCODERS)


def _export_static(folder: Path) -> Path:
    torch.manual_seed(0)
    export_model(folder, build_static_model(CONFIG, SPECS, TASK), CONFIG, DataConfig(), SPECS, TASK, {"note": 1})
    return folder


def _export_dynmm(folder: Path) -> Path:
    cheap = ModelConfig(fusion="unimodal", modalities=["text"], embed_dim=4, encoders=ENCODERS)
    experts = [("text", cheap), ("late", CONFIG)]
    gate = GateConfig(hidden=0, modalities=["text"])
    model = build_modality_level([build_static_model(c, SPECS, TASK) for _, c in experts], gate, SPECS)
    export_model(folder, model, CONFIG, DataConfig(), SPECS, TASK, None, "dynmm", dynmm_sections(experts, gate))
    return folder


def _export_fusion_level(folder: Path) -> Path:
    specs = {"rgb": ModalitySpec("rgb", (3, 16, 16), "image"), "depth": ModalitySpec("depth", (1, 16, 16), "image")}
    task = TaskSpec("segmentation", 4)
    section = FusionLevelConfig(decoder_width=8, gate_width=8)
    model = build_fusion_level(section, specs, task)
    sections = {"fusion_level": section.model_dump()}
    export_model(
        folder, model, ModelConfig(), DataConfig(name="rgbd_synth"), specs, task, None, "fusion_level", sections
    )
    return folder


def _export_adamml(folder: Path) -> Path:
    specs = {
        "image": ModalitySpec("image", (2, 1, 8, 8), "image"),
        "audio": ModalitySpec("audio", (2, 1, 8, 8), "image"),
    }
    section = AdaMMLConfig(encoders={"default": {"kind": "cnn", "channels": [4], "out_dim": 4}})
    section.policy = {"feature_dim": 4, "hidden": 8, "widths": [4], "strides": [2]}
    model = build_adamml(section, specs, TASK)
    sections = {"adamml": section.model_dump()}
    export_model(folder, model, ModelConfig(), DataConfig(name="avclips"), specs, TASK, None, "adamml", sections)
    return folder


EXPORTERS: dict[str, Callable[[Path], Path]] = {
    "static": _export_static,
    "dynmm": _export_dynmm,
    "fusion_level": _export_fusion_level,
    "adamml": _export_adamml,
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    return {kind: export(root / kind) for kind, export in EXPORTERS.items()}


def _copy(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.json", "model.safetensors"):
        (target / name).write_bytes((source / name).read_bytes())
    return target


def _refused(folder: Path, match: str) -> None:
    """load_exported fails with a DataError matching `match`, and leaves both files byte-identical."""
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    with pytest.raises(DataError, match=match):
        load_exported(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("kind", list(EXPORTERS))
def test_every_model_type_round_trips(exports, kind):
    assert load_exported(exports[kind]).model_type == kind


# ----------------------------------------------------------------------------- model.json

Mutation = Callable[[dict[str, Any]], Any]


def _set(path: str, value: Any) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            d = d[key]
        d[last] = value

    return mutate


def _drop(key: str) -> Mutation:
    return lambda d: d.pop(key)


DESCRIPTIONS: dict[str, tuple[Mutation | str | bytes, str]] = {
    # raw contents
    "empty file": ("", "model.json is not valid JSON"),
    "truncated": ("TRUNCATE", "model.json is not valid JSON"),
    "not UTF-8": (b"\xff\xfe{garbage", "model.json is not valid JSON .*utf-8"),
    "a list": ("[]", "model.json must hold a JSON object .*got a list"),
    "null": ("null", "model.json must hold a JSON object .*got a NoneType"),
    # missing keys
    "no model": (_drop("model"), "does not describe a model: KeyError: 'model'"),
    "no data": (_drop("data"), "does not describe a model: KeyError: 'data'"),
    "no modalities": (_drop("modalities"), "does not describe a model: KeyError: 'modalities'"),
    "no task": (_drop("task"), "does not describe a model: KeyError: 'task'"),
    "no version": (_drop("format_version"), r"unsupported export \(format_version=None"),
    "no model_type": (_drop("model_type"), "model_type=None"),
    "no shape": (lambda d: d["modalities"]["text"].pop("shape"), "KeyError: 'shape'"),
    # wrong types and values
    "version as text": (_set("format_version", "1"), r"format_version='1'"),
    "unknown model type": (_set("model_type", "magic"), "model_type='magic'"),
    "model a list": (_set("model", []), "config section 'model' must be a mapping, got list"),
    "modalities a list": (_set("modalities", [1]), "does not describe a model: AttributeError"),
    "shape of text": (_set("modalities.text.shape", "abc"), "modality 'text': shape must be a list of positive"),
    "shape of floats": (_set("modalities.text.shape", [6.5]), r"modality 'text': shape .* got \[6.5\]"),
    "negative shape": (_set("modalities.text.shape", [-6]), r"modality 'text': shape .* got \[-6\]"),
    "shape with a bool": (_set("modalities.text.shape", [True]), r"got \[True\]"),
    "unknown modality kind": (_set("modalities.text.kind", "smell"), "modality 'text': kind must be one of"),
    "unknown task kind": (_set("task.kind", "guessing"), "task must have kind in"),
    "num_classes as text": (_set("task.num_classes", "3"), "task must have kind in .* num_classes >= 0"),
    "task a list": (_set("task", [3]), "does not describe a model: TypeError"),
    "embed_dim as text": (_set("model.embed_dim", "4"), "config key 'model.embed_dim' expects int, got '4'"),
    "unknown model key": (_set("model.embed_dims", 4), r"unknown config key 'model.embed_dims' \(did you mean"),
    "unknown fusion": (_set("model.fusion", "magic"), "unknown fusion 'magic'"),
    "unknown encoder kind": (_set("model.encoders.default.kind", "magic"), "unknown kind 'magic'"),
    "batch_size 0": (_set("data.batch_size", 0), "data.batch_size must be >= 1, got 0"),
    "extra a number": (_set("extra", 5), "extra must be a mapping, got int"),
    # describes another model than the weights hold
    "renamed modality": (
        lambda d: d["modalities"].__setitem__("txt", d["modalities"].pop("text")),
        r"model.safetensors does not match .*model.json: missing \['encoders.txt",
    ),
    "other input width": (
        _set("modalities.text.shape", [7]),
        "model.safetensors does not match .*size mismatch for encoders.text",
    ),
    "other model type": (_set("model_type", "dynmm"), "does not describe a model: KeyError: 'gate'"),
}


@pytest.mark.parametrize("case", list(DESCRIPTIONS))
def test_damaged_model_json_is_a_data_error_naming_it(exports, tmp_path, case):
    folder = _copy(exports["static"], tmp_path / "run")
    change, match = DESCRIPTIONS[case]
    path = folder / "model.json"
    if callable(change):
        description = json.loads(path.read_text())
        change(description)
        path.write_text(json.dumps(description))
    elif change == "TRUNCATE":
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(change if isinstance(change, bytes) else change.encode())
    _refused(folder, match)


@pytest.mark.parametrize(
    ("kind", "section"),
    [("dynmm", "gate"), ("dynmm", "experts"), ("fusion_level", "fusion_level"), ("adamml", "adamml")],
)
def test_method_sections_with_wrong_types(exports, tmp_path, kind, section):
    folder = _copy(exports[kind], tmp_path / "run")
    description = json.loads((folder / "model.json").read_text())
    held = description[section]
    description[section] = [{**e, "bogus": 1} for e in held] if isinstance(held, list) else {**held, "bogus": 1}
    (folder / "model.json").write_text(json.dumps(description))
    _refused(folder, rf"does not describe a model: ConfigError: unknown config key '{section}.bogus'")
    description[section] = "not a mapping"
    (folder / "model.json").write_text(json.dumps(description))
    _refused(folder, "must be a mapping, got str")


# ----------------------------------------------------------------------------- model.safetensors


def _header(data: bytes) -> tuple[dict[str, Any], bytes]:
    size = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _with_header(header: dict[str, Any], body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def _first_tensor(header: dict[str, Any]) -> str:
    return next(k for k in header if k != "__metadata__")


WEIGHTS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty": (lambda b: b"", "not a readable safetensors file .*header too small"),
    "truncated in the data": (lambda b: b[: len(b) - 17], "not a readable safetensors file"),
    "truncated in the header": (lambda b: b[:40], "not a readable safetensors file"),
    "only the length": (lambda b: b[:8], "not a readable safetensors file"),
    "garbage": (lambda b: b"\x00" * 64, "not a readable safetensors file"),
    "a JSON file": (lambda b: b'{"weights": [1, 2, 3]}', "not a readable safetensors file"),
    "a pickle": (lambda b: b"\x80\x04\x95" + b"\x00" * 40, "not a readable safetensors file"),
    "header: dtype changed": (
        lambda b: _with_header(
            *(lambda h, body: ({**h, _first_tensor(h): {**h[_first_tensor(h)], "dtype": "F64"}}, body))(*_header(b))
        ),
        "not a readable safetensors file .*invalid shape, data type, or offset",
    ),
    "header: offsets past the end": (
        lambda b: _with_header(
            *(lambda h, body: ({**h, _first_tensor(h): {**h[_first_tensor(h)], "data_offsets": [0, 10**6]}}, body))(
                *_header(b)
            )
        ),
        "not a readable safetensors file",
    ),
}


@pytest.mark.parametrize("case", list(WEIGHTS))
def test_damaged_safetensors_is_a_data_error_naming_it(exports, tmp_path, case):
    folder = _copy(exports["static"], tmp_path / "run")
    damage, match = WEIGHTS[case]
    path = folder / "model.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    _refused(folder, f"model.safetensors is {match}")


@pytest.mark.parametrize("kind", list(EXPORTERS))
def test_truncated_weights_of_every_model_type(exports, tmp_path, kind):
    folder = _copy(exports[kind], tmp_path / "run")
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _refused(folder, "model.safetensors is not a readable safetensors file")


def _rewrite(folder: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


TENSORS: dict[str, tuple[Callable[[dict[str, torch.Tensor]], None], str]] = {
    "a missing tensor": (lambda t: t.pop(sorted(t)[0]), r"does not match .*missing \["),
    "an unexpected tensor": (lambda t: t.__setitem__("stray.weight", torch.zeros(2)), r"unexpected \['stray.weight'\]"),
    "a tensor of another shape": (lambda t: t.__setitem__(sorted(t)[0], torch.zeros(1, 1)), "size mismatch"),
    "float64 tensors": (
        lambda t: t.update({k: v.double() for k, v in t.items()}),
        r"has dtype torch.float64, the model expects torch.float32",
    ),
    "int tensors": (
        lambda t: t.update({k: v.long() for k, v in t.items()}),
        r"has dtype torch.int64, the model expects torch.float32",
    ),
    "bool tensors": (
        lambda t: t.update({k: v > 0 for k, v in t.items()}),
        r"has dtype torch.bool, the model expects torch.float32",
    ),
    "a NaN weight": (lambda t: t[sorted(t)[0]].view(-1).__setitem__(0, float("nan")), "holds NaN or inf values"),
    "an inf weight": (lambda t: t[sorted(t)[-1]].view(-1).__setitem__(0, float("inf")), "holds NaN or inf values"),
}


@pytest.mark.parametrize("case", list(TENSORS))
def test_weights_that_do_not_fit_the_description(exports, tmp_path, case):
    """Fixed: float64/int/bool tensors used to be cast silently by load_state_dict, and NaN weights loaded into
    a model that answers NaN for every input."""
    folder = _copy(exports["static"], tmp_path / "run")
    change, match = TENSORS[case]
    _rewrite(folder, change)
    _refused(folder, match)


def test_missing_files(exports, tmp_path):
    folder = _copy(exports["static"], tmp_path / "run")
    (folder / "model.safetensors").unlink()
    _refused(folder, "model.safetensors is missing")
    (folder / "model.json").unlink()
    (folder / "model.json").mkdir()  # a folder where the file should be
    _refused(folder, "model.json is missing")


# ----------------------------------------------------------------------------- no pickle anywhere


def test_every_torch_load_in_src_is_weights_only():
    """Checkpoints are pickles: a torch.load without weights_only=True could run code from a file."""
    calls = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.start() : text.find("\n", match.start())]
            calls.append((path.relative_to(SRC), call))
    assert calls, "no torch.load found: update this test"
    unsafe = [(str(p), c) for p, c in calls if "weights_only=True" not in c]
    assert not unsafe, unsafe
    assert not [
        p
        for p in SRC.rglob("*.py")
        if re.search(r"\bpickle\.loads?\(|\bnp\.load\([^)]*allow_pickle=True", p.read_text())
    ]


# ----------------------------------------------------------------------------- found MFAS models


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory):
    from tests.reliability.test_model_inputs import build_mfas

    model = build_mfas()
    folder = tmp_path_factory.mktemp("found")
    backbones = {m: model.backbone_models[m] for m in ("image", "audio")}
    save_found(folder, model, model.space, to_json(model.architecture), 5, {"name": "x"})
    return folder, backbones


FOUND: dict[str, tuple[str, Callable[[bytes], bytes], str]] = {
    "architecture not JSON": (MFAS_DESCRIPTION, lambda b: b[:30], "does not hold a found MFAS model"),
    "architecture not UTF-8": (MFAS_DESCRIPTION, lambda b: b"\xff" + b, "does not hold a found MFAS model"),
    "architecture a list": (MFAS_DESCRIPTION, lambda b: b"[1, 2]", "does not hold a found MFAS model"),
    "no modalities": (
        MFAS_DESCRIPTION,
        lambda b: json.dumps({k: v for k, v in json.loads(b).items() if k != "modalities"}).encode(),
        "'modalities'",
    ),
    "width as text": (
        MFAS_DESCRIPTION,
        lambda b: json.dumps({**json.loads(b), "width": "wide"}).encode(),
        "does not hold a found MFAS model",
    ),
    "architecture of text": (
        MFAS_DESCRIPTION,
        lambda b: json.dumps({**json.loads(b), "architecture": "abc"}).encode(),
        "does not hold a found MFAS model",
    ),
    "weights truncated": (MFAS_WEIGHTS, lambda b: b[: len(b) // 2], "does not hold a found MFAS model"),
    "weights garbage": (MFAS_WEIGHTS, lambda b: b"\x00" * 32, "does not hold a found MFAS model"),
}


@pytest.mark.parametrize("case", list(FOUND))
def test_damaged_found_model_is_a_data_error(found, tmp_path, case):
    source, backbones = found
    name, damage, match = FOUND[case]
    for file in (MFAS_DESCRIPTION, MFAS_WEIGHTS):
        (tmp_path / file).write_bytes((source / file).read_bytes())
    (tmp_path / name).write_bytes(damage((tmp_path / name).read_bytes()))
    before = (tmp_path / name).read_bytes()
    with pytest.raises(DataError, match=match):
        load_found(tmp_path, copy.deepcopy(backbones))
    assert (tmp_path / name).read_bytes() == before


def test_found_model_round_trips(found):
    source, backbones = found
    assert load_found(source, copy.deepcopy(backbones)).keys


@pytest.mark.parametrize("kind", list(EXPORTERS))
def test_exports_written_before_the_method_packages_still_load(exports, tmp_path, kind):
    """model.json used to hold every method's keys (null or empty where unused); such a run still loads."""
    folder = _copy(exports[kind], tmp_path / "run")
    description = json.loads((folder / "model.json").read_text())
    old = {"fusion_level": None, "adamml": None, "experts": [], "gate": None}
    (folder / "model.json").write_text(json.dumps(old | description))
    assert load_exported(folder).model_type == kind
