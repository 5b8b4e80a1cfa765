"""Bad batches into every model's forward, in every execution and policy mode: each fails with an InputError
that names the modality (missing key, shape, dtype, NaN/inf, empty batch, mismatched batch sizes) before any
layer runs; extra keys are ignored, as the models document; a batch of one row is answered like any other row;
all rows routed to one expert give what the masked reference gives."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from dynmm.config import ModelConfig
from dynmm.errors import ConfigError, InputError
from dynmm.methods.adamml.model import AdaMML
from dynmm.methods.fusion_level.model import FusionLevelDynMM
from dynmm.methods.mfas.backbones import Backbone
from dynmm.methods.mfas.feature_cache import FeatureCache
from dynmm.methods.mfas.model import MFASModel
from dynmm.methods.mfas.space import FusionNetwork, LayerChoice, SearchSpace
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.methods.modality_level.speed import forced_choice
from dynmm.nn.gates import MLPGate
from dynmm.nn.static_model import StaticFusionModel, build_static_model
from dynmm.routing import route
from dynmm.specs import Inputs, ModalitySpec, TaskSpec

Batch = Callable[[int], Inputs]

# ----------------------------------------------------------------------------- tiny models, built once

DYN_SPECS = {"text": ModalitySpec("text", (10,), "vector"), "audio": ModalitySpec("audio", (1, 8, 16), "image")}
DYN_TASK = TaskSpec("classification", 4)
ENCODERS: dict[str, Any] = {"default": {"kind": "mlp", "hidden": [16]}, "audio": {"kind": "cnn", "channels": [8, 16]}}


def dyn_batch(n: int, seed: int = 1) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    return {"text": torch.randn(n, 10, generator=g), "audio": torch.randn(n, 1, 8, 16, generator=g)}


def build_dynmm(gate_modalities: tuple[str, ...] = ("text", "audio")) -> ModalityLevelDynMM:
    torch.manual_seed(0)
    text_only = ModelConfig(fusion="unimodal", modalities=["text"], encoders=ENCODERS)
    cheap = build_static_model(text_only, DYN_SPECS, DYN_TASK)
    full = build_static_model(ModelConfig(fusion="late_mean", encoders=ENCODERS), DYN_SPECS, DYN_TASK)
    gate = MLPGate(2, DYN_SPECS, list(gate_modalities), hidden=8)
    return ModalityLevelDynMM([cheap, full], gate, dyn_batch(1)).eval()


FL_SIZE = (32, 48)  # the deepest stage's map stays > 1x1: batch norm can train on one row


def fl_batch(n: int, seed: int = 1) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(n, 3, *FL_SIZE, generator=g), "depth": torch.randn(n, 1, *FL_SIZE, generator=g)}


T = 3
CLIP_SPECS = {
    "image": ModalitySpec("image", (T, 1, 12, 12), "image"),
    "audio": ModalitySpec("audio", (T, 1, 10, 13), "image"),
}
CLIP_ENCODERS = {"default": {"kind": "cnn", "channels": [4, 8], "out_dim": 8}}
POLICY = {"feature_dim": 8, "hidden": 16, "widths": (4, 8), "strides": (1, 2), "expand_ratio": 2}


def clips(n: int, seed: int = 1) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, T, 1, 12, 12, generator=g), "audio": torch.randn(n, T, 1, 10, 13, generator=g)}


MFAS_SPECS = {"image": ModalitySpec("image", (1, 8, 8), "image"), "audio": ModalitySpec("audio", (1, 6, 10), "image")}
MFAS_ENCODERS = {"image": {"kind": "cnn", "channels": [4, 8]}, "audio": {"kind": "conv1d", "channels": [8, 8]}}


def mfas_batch(n: int, seed: int = 1) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 1, 8, 8, generator=g), "audio": torch.randn(n, 1, 6, 10, generator=g)}


def build_mfas() -> MFASModel:
    backbones = []
    for seed, modality in enumerate(("image", "audio")):
        torch.manual_seed(seed)
        config = ModelConfig(
            fusion="unimodal", modalities=[modality], embed_dim=6, encoders={modality: MFAS_ENCODERS[modality]}
        )
        backbones.append(
            Backbone(build_static_model(config, {modality: MFAS_SPECS[modality]}, TaskSpec("classification", 3)))
        )
    from dynmm.data.base import MultimodalDataset

    data = {
        s: MultimodalDataset(mfas_batch(12, seed=i), torch.randint(0, 3, (12,)))
        for i, s in enumerate(("train", "valid", "test"))
    }
    cache = FeatureCache(backbones, data)
    dims = cache.dims()
    space = SearchSpace(
        ("image", "audio"),
        {b.modality: b.names for b in backbones},
        {b.modality: tuple(dims[f"{b.modality}.{n}"] for n in b.names) for b in backbones},
        ("relu", "sigmoid"),
        2,
    )
    torch.manual_seed(0)
    architecture = (LayerChoice((1, 1), 0), LayerChoice((0, 2), 1))
    network = FusionNetwork(space, architecture, 5, 3).eval()
    model = MFASModel(backbones, cache.standardizers, network)
    model.space, model.architecture = space, architecture  # what saving it needs (test_exports)
    return model


def _set(model: nn.Module, **attributes: Any) -> nn.Module:
    for name, value in attributes.items():
        if name == "policy_mode":
            model.set_policy_mode(value)  # type: ignore[operator]
        elif name == "mode":
            model.set_mode(value)  # type: ignore[operator]
        elif name == "training":
            model.train(value)
        else:
            setattr(model, name, value)
    return model


@pytest.fixture(scope="module")
def built() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    dynmm = build_dynmm()
    return {
        "static": dynmm.experts[1],
        "dynmm": dynmm,
        "dynmm_text_gate": build_dynmm(("text",)),
        "fusion_level": FusionLevelDynMM("tiny", 5, FL_SIZE, decoder_width=8, gate_width=8).eval(),
        "adamml": AdaMML(CLIP_SPECS, 5, encoders=CLIP_ENCODERS, policy=POLICY).eval(),
        "mfas": build_mfas(),
    }


# (name, which built model, its settings, a batch maker); every mode of every model.
CASES: list[tuple[str, str, dict[str, Any], Batch]] = [
    ("static", "static", {}, dyn_batch),
    *[(f"dynmm-{m}", "dynmm", {"mode": m}, dyn_batch) for m in ("dispatch", "masked", "dense")],
    ("dynmm-training", "dynmm", {"training": True}, dyn_batch),
    ("dynmm-text-gate", "dynmm_text_gate", {"mode": "dispatch"}, dyn_batch),
    *[(f"fusion_level-{m}", "fusion_level", {"mode": m}, fl_batch) for m in ("dispatch", "masked", "dense")],
    ("fusion_level-training", "fusion_level", {"training": True}, fl_batch),
    ("fusion_level-static-op", "fusion_level", {"static_op": 0}, fl_batch),
    *[(f"adamml-{p}", "adamml", {"policy_mode": p}, clips) for p in ("learned", "all", "random", "fixed")],
    ("adamml-masked", "adamml", {"mode": "masked"}, clips),
    ("adamml-training", "adamml", {"training": True}, clips),
    ("mfas", "mfas", {}, mfas_batch),
]
IDS = [c[0] for c in CASES]


@pytest.fixture(params=CASES, ids=IDS)
def case(request: pytest.FixtureRequest, built: dict[str, nn.Module]) -> tuple[nn.Module, Batch]:
    _, key, settings, make = request.param
    return _set(copy.deepcopy(built[key]), **settings), make


def run(model: nn.Module, inputs: Any) -> Tensor:
    with torch.no_grad():
        return model(inputs)


def first(inputs: Inputs, model: nn.Module) -> str:
    """The first modality the model checks (sorted, as the specs are)."""
    return sorted(getattr(model, "specs", inputs))[0]


def test_missing_modality_is_named(case):
    model, make = case
    x = make(2)
    name = first(x, model)
    del x[name]
    with pytest.raises(InputError, match=f"missing modality '{name}'"):
        run(model, x)


def test_extra_keys_are_ignored(case):
    model, make = case
    twin = copy.deepcopy(model)  # the random policy draws from the model's own generator
    torch.manual_seed(3)
    plain = run(model, make(3))
    torch.manual_seed(3)
    extra = run(twin, {**make(3), "unused": torch.full((7,), float("nan")), "labels": "not a tensor"})  # type: ignore[dict-item]
    torch.testing.assert_close(extra, plain, rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["last dim", "no batch dim", "extra dim"])
def test_wrong_shape_names_modality_expected_and_got(case, damage):
    model, make = case
    x = make(2)
    name = first(x, model)
    bad = {"last dim": x[name][..., :-1], "no batch dim": x[name][0], "extra dim": x[name][..., None]}[damage]
    x[name] = bad
    with pytest.raises(
        InputError, match=rf"modality '{name}' expected shape \(batch, .*\), got \({', '.join(map(str, bad.shape))}"
    ):
        run(model, x)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
def test_integer_and_bool_tensors_are_refused(case, dtype):
    model, make = case
    x = make(2)
    name = first(x, model)
    x[name] = (x[name] > 0).to(dtype)
    with pytest.raises(InputError, match=f"modality '{name}' must be a floating-point tensor, got dtype {dtype}"):
        run(model, x)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_other_float_dtypes_are_refused_before_any_layer(case, dtype):
    """Fixed: a float64 batch used to fail deep in a Linear/conv ("mat1 and mat2 must have the same dtype")."""
    model, make = case
    x = {k: v.to(dtype) for k, v in make(2).items()}
    with pytest.raises(InputError, match=rf"modality '\w+' has dtype {dtype} but the model computes in torch.float32"):
        run(model, x)


def test_a_model_converted_to_float64_takes_float64(built):
    model = copy.deepcopy(built["static"]).double()
    x = {k: v.double() for k, v in dyn_batch(3).items()}
    assert run(model, x).dtype == torch.float64
    with pytest.raises(InputError, match="has dtype torch.float32 but the model computes in torch.float64"):
        run(model, dyn_batch(3))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused(case, value):
    model, make = case
    x = make(3)
    name = first(x, model)
    x[name][1].view(-1)[0] = value
    with pytest.raises(InputError, match=f"modality '{name}' contains NaN or inf values in 1 sample"):
        run(model, x)


def test_empty_batch_is_refused(case):
    model, make = case
    with pytest.raises(InputError, match=r"empty batch \(0 samples\)"):
        run(model, {k: v[:0] for k, v in make(2).items()})


def test_batch_sizes_must_agree(case):
    model, make = case
    x = make(3)
    name = sorted(getattr(model, "specs", x))[-1]
    x[name] = x[name][:2]
    with pytest.raises(InputError, match="batch sizes differ"):
        run(model, x)


@pytest.mark.parametrize("bad", ["a list", "a numpy array"])
def test_not_a_dict_of_tensors(case, bad):
    model, make = case
    x = make(2)
    if bad == "a list":
        with pytest.raises(InputError, match="inputs must be a dict of modality -> tensor, got list"):
            run(model, list(x.values()))
    else:
        name = first(x, model)
        x[name] = x[name].numpy()  # type: ignore[assignment]
        with pytest.raises(InputError, match=f"modality '{name}' must be a torch.Tensor, got ndarray"):
            run(model, x)


def test_batch_of_one_equals_its_row_in_a_bigger_batch(case):
    model, make = case
    if model.training or getattr(model, "policy_mode", None) == "random":
        torch.manual_seed(0)
        assert run(model, make(1)).shape[0] == 1  # training / random draws: only the shape is deterministic
        return
    x = make(5)
    one = run(model, {k: v[2:3] for k, v in x.items()})
    torch.testing.assert_close(one, run(model, x)[2:3], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- routing-specific cases


def test_modality_level_checks_every_expert_modality_before_routing(built):
    """Fixed: with a gate on text only, a batch without audio used to pass whenever no row was routed to the
    expert that reads audio, and fail otherwise: the outcome depended on the routing."""
    model = copy.deepcopy(built["dynmm_text_gate"])
    x = dyn_batch(4)
    del x["audio"]
    for beta in (-100.0, 100.0):  # all rows to the costly expert (reads audio), all to the text-only one
        model.beta = beta
        with pytest.raises(InputError, match="ModalityLevelDynMM: missing modality 'audio'"):
            run(model, x)


@pytest.mark.parametrize("expert", [0, 1])
@pytest.mark.parametrize("how", ["beta", "forced"])
def test_all_rows_routed_to_one_expert(built, expert, how):
    model = copy.deepcopy(built["dynmm"])
    x = dyn_batch(9)
    experts = list(model.experts)
    with torch.no_grad():
        if how == "beta":  # the cost knob: β ≪ 0 sends every row to the costliest expert, β ≫ 0 to the cheapest
            model.beta = 100.0 if expert == 0 else -100.0
            fast = model(x)
            assert model.last_gate is not None and bool((model.last_gate.choice == expert).all())
            model.set_mode("masked")
            reference = model(x)
        else:  # what `dynmm bench speed` does: a forced choice through the routing core
            choice = forced_choice(9, 1.0 if expert == 0 else 0.0, expensive=1)
            assert bool((choice == expert).all())
            fast = route(experts, x, choice, None, "dispatch")
            reference = route(experts, x, choice, None, "masked")
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(fast, run(experts[expert], x), rtol=0, atol=0)


def test_missing_modality_argument_routes_around_it(built):
    """The documented fallback: `missing` names a zero-filled modality and the gate avoids experts needing it."""
    model = copy.deepcopy(built["dynmm"])
    x = dyn_batch(6)
    x["audio"] = torch.zeros_like(x["audio"])
    model.beta = -100.0  # would send everything to the expert that reads audio
    run_missing = model
    with torch.no_grad():
        run_missing(x, missing=["audio"])
    assert run_missing.last_gate is not None and bool((run_missing.last_gate.choice == 0).all())


@pytest.mark.parametrize(
    ("forced", "match"),
    [
        (torch.zeros(2, 4, dtype=torch.long), r"forced_choice must be \(batch, 4\)"),
        (torch.full((3, 4), 9, dtype=torch.long), r"int64 op indices in \[0, "),
        (torch.full((3, 4), -1, dtype=torch.long), r"int64 op indices in \[0, "),
        (torch.zeros(3, 4), r"got dtype torch.float32"),
    ],
)
def test_fusion_level_forced_choice_is_checked(built, forced, match):
    """Fixed: out-of-range or float forced paths used to fail inside gather/one_hot with an index error."""
    model = copy.deepcopy(built["fusion_level"])
    assert model.num_cells == 4
    model.forced_choice = forced
    with pytest.raises(ConfigError, match=match):
        run(model, fl_batch(3))


@pytest.mark.parametrize("mode", ["dispatch", "masked"])
def test_fusion_level_forced_single_path_for_every_row(built, mode):
    model = _set(copy.deepcopy(built["fusion_level"]), mode=mode)
    x = fl_batch(4)
    outputs = []
    for op in range(len(model.op_names)):
        model.forced_choice = torch.full((4, model.num_cells), op, dtype=torch.long)
        outputs.append(run(model, x))
        model.static_op, model.forced_choice = op, None
        torch.testing.assert_close(run(model, x), outputs[-1], rtol=0, atol=1e-6)
        model.static_op = None
    assert all(o.shape == (4, 5, *FL_SIZE) and bool(torch.isfinite(o).all()) for o in outputs)


def test_fusion_level_primary_cannot_be_missing(built):
    with pytest.raises(InputError, match="cannot be missing"):
        built["fusion_level"](fl_batch(2), missing=["rgb"])


def test_adamml_every_clip_falls_back_when_nothing_is_kept(built):
    """The documented fallback: a clip that keeps nothing keeps the cheapest modality on its first segment."""
    model = copy.deepcopy(built["adamml"])
    model.set_policy_mode("random", keep_rate=0.0)
    out = run(model, clips(4))
    assert model.last_fell_back is not None and bool(model.last_fell_back.all())
    assert bool(torch.isfinite(out).all())
    keep = model.last_keep
    assert keep is not None and int(keep[model.fallback].sum()) == 4 and int(keep[model.fallback][:, 0].sum()) == 4


def test_adamml_clip_of_wrong_length_is_refused(built):
    x = clips(2)
    x["audio"] = torch.cat([x["audio"], x["audio"][:, :1]], dim=1)
    with pytest.raises(InputError, match=rf"modality 'audio' expected shape \(batch, {T}, 1, 10, 13\)"):
        run(built["adamml"], x)


def test_static_model_is_a_static_fusion_model(built):
    assert isinstance(built["static"], StaticFusionModel)
