"""Encoders from outside the zoo: a user's nn.Module by import path, timm backbones, HF models from a local folder.

Nothing here downloads: the user's modules are written into tmp folders, timm is replaced by a stand-in module
(the real one is tried and skipped where it does not import), and the HF model is a tiny random BERT saved to a
tmp folder. Each kind's width comes from a dry forward, its MAdds are counted like any module's, and every
misconfiguration is one ConfigError naming the modality.
"""

from __future__ import annotations

import sys
import textwrap
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from dynmm.config import ModelConfig, load_config
from dynmm.cost import count_madds, measure_madds
from dynmm.errors import ConfigError, InputError
from dynmm.nn.encoders import build_encoder
from dynmm.nn.external_encoders import ExternalEncoder, adapt_input_conv, pool_output
from dynmm.nn.static_model import build_static_model
from dynmm.specs import ModalitySpec, TaskSpec

VECTOR = ModalitySpec("text", (8,), "vector")
SEQUENCE = ModalitySpec("seq", (6, 5), "sequence")
IMAGE = ModalitySpec("image", (1, 12, 12), "image")
BERT = object()  # stands for the tiny BERT folder in parametrized options

USER_MODULE = """
import torch
from torch import nn


class TextEncoder(nn.Module):
    def __init__(self, in_features, width=8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Dropout(0.1))

    def forward(self, x):
        return self.net(x)


class Recorder(nn.Module):  # remembers how the dry forward ran it
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 3)
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return self.lin(x)


class Sequence(nn.Module):  # (batch, time, features) out
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 4)

    def forward(self, x):
        return self.lin(x)


class Tuple(nn.Module):
    def forward(self, x):
        return x, x


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x)


class NotAModule:
    pass


def make_encoder(width=4):
    return nn.Linear(8, width)


def make_string():
    return "no module"


def fails(**kwargs):
    raise ValueError("width must be even")


SHARED = nn.Linear(8, 2)
CONSTANT = 3
"""


MOSI_MODULE_YAML = """
data: {name: mosi, batch_size: 32, options: {split_column: split}}
model:
  fusion: late_mean
  embed_dim: 16
  encoders:
    default: {kind: mlp, hidden: []}
    text: {kind: module, target: "mosinets:TextEncoder", kwargs: {in_features: 100, width: 8}}
train: {max_epochs: 1, weight_decay: 0.1}
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's module file `mynets_<n>.py` in a tmp folder put on sys.path; yields its import name."""
    name = f"mynets_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def module_cfg(target, **options):
    return {"kind": "module", "target": target, **options}


# --- kind: module -----------------------------------------------------------------------------------------------


def test_module_linear_width_and_madds_per_sample():
    enc = build_encoder(VECTOR, module_cfg("torch.nn:Linear", kwargs={"in_features": 8, "out_features": 4}))
    assert isinstance(enc, ExternalEncoder) and isinstance(enc.module, nn.Linear)
    assert enc.out_dim == 4
    assert enc(torch.randn(3, 8)).shape == (3, 4)
    assert measure_madds(enc, torch.randn(3, 8)).total == 8 * 4  # one sample, nothing added by the wrapper


def test_module_class_and_factory_from_a_user_file(user_module):
    enc = build_encoder(VECTOR, module_cfg(f"{user_module}:TextEncoder", kwargs={"in_features": 8, "width": 5}))
    assert enc.out_dim == 5 and type(enc.module).__name__ == "TextEncoder"
    factory = build_encoder(VECTOR, module_cfg(f"{user_module}:make_encoder", kwargs={"width": 6}, out_dim=3))
    assert factory.out_dim == 3 and isinstance(factory.proj, nn.Linear) and factory.proj.in_features == 6
    x = torch.randn(2, 8)
    torch.testing.assert_close(factory(x), factory.proj(factory.module(x)))


def test_dry_forward_runs_in_eval_without_grad_and_restores_train_mode(user_module):
    enc = build_encoder(VECTOR, module_cfg(f"{user_module}:Recorder"))
    assert enc.module.seen == [(False, False)]
    assert enc.training and enc.module.training
    assert enc.out_dim == 3


def test_module_is_found_in_the_folder_dynmm_runs_from(tmp_path, monkeypatch):
    name = f"cwdnets_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.chdir(tmp_path)
    try:
        enc = build_encoder(VECTOR, module_cfg(f"{name}:make_encoder"))
    finally:
        sys.modules.pop(name, None)
    assert enc.out_dim == 4 and str(tmp_path) in sys.path


def test_pooling_defaults_mean_over_time_and_over_space(user_module):
    enc = build_encoder(SEQUENCE, module_cfg(f"{user_module}:Sequence"))
    x = torch.randn(3, 6, 5)
    assert enc.out_dim == 4
    torch.testing.assert_close(enc(x), enc.module(x).mean(dim=1))
    conv = build_encoder(
        IMAGE, module_cfg("torch.nn:Conv2d", kwargs={"in_channels": 1, "out_channels": 7, "kernel_size": 3})
    )
    image = torch.randn(2, 1, 12, 12)
    assert conv.out_dim == 7
    torch.testing.assert_close(conv(image), conv.module(image).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("pool", "dims", "expected"),
    [
        ("max", None, lambda y: y.amax(dim=(2, 3))),
        ("first", None, lambda y: y[:, :, 0, 0]),
        ("flatten", None, lambda y: y.flatten(1)),
        ("mean", [3], lambda y: y.mean(dim=3).flatten(1)),
        ("mean", [-1, -2], lambda y: y.mean(dim=(2, 3))),
    ],
)
def test_pool_options(pool, dims, expected):
    y = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(pool_output(y, pool, dims), expected(y))


def test_pool_option_reaches_the_encoder():
    cfg = module_cfg("torch.nn:Conv2d", kwargs={"in_channels": 1, "out_channels": 2, "kernel_size": 3})
    enc = build_encoder(IMAGE, {**cfg, "pool": "flatten"})
    assert enc.out_dim == 2 * 10 * 10
    enc = build_encoder(IMAGE, {**cfg, "pool_dims": [2]})
    assert enc.out_dim == 2 * 10


def test_freeze_keeps_the_module_fixed_and_in_eval_mode(user_module):
    enc = build_encoder(VECTOR, module_cfg(f"{user_module}:TextEncoder", kwargs={"in_features": 8}, freeze=True))
    enc.train()
    assert not enc.module.training and enc.training
    assert not any(p.requires_grad for p in enc.module.parameters())
    enc = build_encoder(
        VECTOR, module_cfg(f"{user_module}:TextEncoder", kwargs={"in_features": 8}, freeze=True, out_dim=2)
    )
    assert all(p.requires_grad for p in enc.proj.parameters())


@pytest.mark.parametrize(
    ("target", "options", "message"),
    [
        ("no_such_package_xyz.nets:Net", {}, "cannot import module 'no_such_package_xyz.nets'"),
        ("{m}:Missing", {}, "has no attribute 'Missing'"),
        ("{m}:CONSTANT", {}, "is a int, not an nn.Module class or a function returning one"),
        ("{m}:NotAModule", {}, "is the class NotAModule, which is not a torch.nn.Module"),
        ("{m}:SHARED", {}, "is an nn.Module instance"),
        ("{m}:make_string", {}, "returned a str, not an nn.Module"),
        ("{m}:TextEncoder", {"kwargs": {"in_features": 8, "depth": 2}}, "rejected kwargs"),
        ("{m}:fails", {}, "failed: ValueError: width must be even"),
        ("{m}:Broken", {}, "failed on a zero input of shape (1, 8) (modality 'text', vector (8,)): RuntimeError"),
        ("{m}:Tuple", {}, "returned a tuple, not a tensor"),
        ("no_colon", {}, "target must be 'package.module:ClassOrFactory'"),
        ("{m}:make_encoder", {"pool": "median"}, "option 'pool' must be one of mean, max, first, flatten"),
        ("{m}:make_encoder", {"out_dim": 0}, "option 'out_dim' must be a positive integer"),
        ("{m}:make_encoder", {"kwargs": [1]}, "option 'kwargs' must be a mapping"),
        ("{m}:make_encoder", {"hidden": [3]}, "unknown option(s) 'hidden' for kind 'module'"),
        ("{m}:make_encoder", {"pool": "flatten", "pool_dims": [1]}, "pool_dims has no meaning"),
    ],
)
def test_module_errors_are_one_line_config_errors(user_module, target, options, message):
    with pytest.raises(ConfigError) as err:
        build_encoder(VECTOR, module_cfg(target.format(m=user_module), **options))
    text = str(err.value)
    assert message in text and "\n" not in text
    assert text.startswith("encoder of modality 'text': ")


def test_module_import_error_inside_the_users_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "badnets_x1.py").write_text("import numpy_but_misspelt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="cannot import module 'badnets_x1'.*No module named 'numpy_but_misspelt'"):
        build_encoder(VECTOR, module_cfg("badnets_x1:Net"))


def test_pool_dims_must_leave_a_feature_axis(user_module):
    with pytest.raises(ConfigError, match=r"pool_dims \[1, 2\] must name some, not all"):
        build_encoder(SEQUENCE, module_cfg(f"{user_module}:Sequence", pool_dims=[1, 2]))
    with pytest.raises(ConfigError, match=r"axis 0 is the batch"):
        build_encoder(SEQUENCE, module_cfg(f"{user_module}:Sequence", pool_dims=[0]))


def test_static_model_projects_to_embed_dim_unless_out_dim_is_null(user_module):
    specs = {"text": VECTOR}
    encoders = {"text": module_cfg(f"{user_module}:TextEncoder", kwargs={"in_features": 8, "width": 5})}
    task = TaskSpec("regression")
    model = build_static_model(ModelConfig(fusion="concat", embed_dim=6, encoders=encoders), specs, task)
    assert model.encoders["text"].out_dim == 6
    encoders["text"]["out_dim"] = None
    model = build_static_model(ModelConfig(fusion="concat", embed_dim=6, encoders=encoders), specs, task)
    assert model.encoders["text"].out_dim == 5
    report = measure_madds(model, {"text": torch.randn(2, 8)})
    assert report.by_module["StaticFusionModel.encoders.text"] == 8 * 5


def test_static_model_with_a_module_encoder_trains_through_dynmm_train(tmp_path, monkeypatch):
    from dynmm.methods.evaluate_run import evaluate_exported
    from dynmm.methods.registry import train_run

    project = tmp_path / "project"
    project.mkdir()
    (project / "mosinets.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.chdir(project)
    (project / "mosi_module.yaml").write_text(MOSI_MODULE_YAML)
    overrides = [f"--output_dir={tmp_path / 'runs'}", "--name=module_encoder", "--train.max_epochs=1"]
    try:
        config = load_config("mosi_module.yaml", [*overrides, "--train.progress_bar=false"])
        assert config.model.encoders["text"]["kind"] == "module"
        result = train_run(config)
        metrics = result.metrics
        # TextEncoder's Linear(100, 8), then the Linear to embed_dim 16 that every encoder ends with
        assert metrics["madds_by_part"]["encoders.text"] == 100 * 8 + 8 * 16
        assert metrics["epochs"] == 1
        evaluation = evaluate_exported(result.run_dir, "test")  # rebuilt from model.json: imports mosinets again
        assert evaluation.metrics["mae"] == pytest.approx(evaluation.recorded["mae"], abs=1e-6)
    finally:
        sys.modules.pop("mosinets", None)


# --- kind: timm ---------------------------------------------------------------------------------------------------


class FakeTimmNet(nn.Module):
    """What timm.create_model(num_classes=0) returns: pooled features, `num_features`, a pretrained_cfg."""

    def __init__(self, in_chans: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.fc: nn.Module = nn.Linear(4, num_classes) if num_classes else nn.Identity()
        self.num_features = 4
        self.pretrained_cfg = {"classifier": "fc", "first_conv": "conv1"}

    def forward(self, x):
        return self.fc(self.bn1(self.conv1(x)).mean(dim=(2, 3)))


@pytest.fixture
def fake_timm(monkeypatch):
    calls = []

    def create_model(name, pretrained=True, num_classes=1000, in_chans=3, **kwargs):
        calls.append(
            {"name": name, "pretrained": pretrained, "num_classes": num_classes, "in_chans": in_chans, **kwargs}
        )
        if name != "fakenet":
            raise RuntimeError(f"Unknown model ({name})")
        return FakeTimmNet(in_chans, num_classes)

    module = types.ModuleType("timm")
    module.create_model = create_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "timm", module)
    return calls


def test_timm_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ConfigError) as err:
        build_encoder(IMAGE, {"kind": "timm", "name": "resnet18"})
    assert 'pip install "dynmm[timm]"' in str(err.value) and "\n" not in str(err.value)


def test_timm_never_downloads_and_takes_channels_from_the_modality(fake_timm):
    enc = build_encoder(IMAGE, {"kind": "timm", "name": "fakenet", "out_dim": 3})
    assert fake_timm == [{"name": "fakenet", "pretrained": False, "num_classes": 0, "in_chans": 1}]
    assert enc.out_dim == 3 and enc.proj.in_features == 4
    assert enc(torch.randn(2, 1, 12, 12)).shape == (2, 3)


def test_timm_loads_local_safetensors_dropping_the_classifier_and_adapting_the_first_conv(fake_timm, tmp_path):
    pretrained = FakeTimmNet(in_chans=3, num_classes=10)
    save_file(pretrained.state_dict(), str(tmp_path / "fakenet.safetensors"))
    enc = build_encoder(IMAGE, {"kind": "timm", "name": "fakenet", "weights": str(tmp_path / "fakenet.safetensors")})
    torch.testing.assert_close(enc.module.conv1.weight, pretrained.conv1.weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(enc.module.bn1.weight, pretrained.bn1.weight)
    assert enc.out_dim == 4


def test_timm_loads_pth_with_tensors_only(fake_timm, tmp_path):
    pretrained = FakeTimmNet(in_chans=1, num_classes=0)
    torch.save({"state_dict": pretrained.state_dict()}, tmp_path / "w.pth")
    enc = build_encoder(IMAGE, {"kind": "timm", "name": "fakenet", "weights": str(tmp_path / "w.pth")})
    torch.testing.assert_close(enc.module.conv1.weight, pretrained.conv1.weight)
    torch.save({"net": types.SimpleNamespace(a=1)}, tmp_path / "code.pth")  # a pickled object, not tensors
    with pytest.raises(ConfigError, match="as tensors only"):
        build_encoder(IMAGE, {"kind": "timm", "name": "fakenet", "weights": str(tmp_path / "code.pth")})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "nonet"}, "timm could not build 'nonet'"),
        ({"name": "fakenet", "kwargs": {"pretrained": True}}, "kwargs ['pretrained'] are set by dynmm"),
        ({"name": "fakenet", "weights": "missing.safetensors"}, "weights file 'missing.safetensors' not found"),
        ({}, "kind 'timm' needs name"),
    ],
)
def test_timm_errors(fake_timm, options, message):
    with pytest.raises(ConfigError) as err:
        build_encoder(IMAGE, {"kind": "timm", **options})
    assert message in str(err.value)


def test_timm_weights_that_do_not_fit_are_refused(fake_timm, tmp_path):
    state = FakeTimmNet(in_chans=1, num_classes=0).state_dict()
    state.pop("bn1.weight")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(ConfigError, match=r"missing \['bn1.weight'\]; unexpected \['extra.weight'\]"):
        build_encoder(IMAGE, {"kind": "timm", "name": "fakenet", "weights": str(tmp_path / "w.safetensors")})
    with pytest.raises(ConfigError, match="reads image modalities"):
        build_encoder(VECTOR, {"kind": "timm", "name": "fakenet"})


def test_adapt_input_conv_repeats_and_rescales():
    w = torch.randn(4, 3, 3, 3)
    adapted = adapt_input_conv(w, 6)
    assert adapted.shape == (4, 6, 3, 3)
    torch.testing.assert_close(adapted[:, 3:], w * 0.5)
    torch.testing.assert_close(adapt_input_conv(w, 1), w.sum(dim=1, keepdim=True))


def test_real_timm_resnet18_where_timm_imports():
    try:
        import timm  # noqa: F401
    except Exception as err:  # absent, or installed without a torchvision that imports beside this torch
        pytest.skip(f"timm does not import here: {type(err).__name__}: {err}")
    enc = build_encoder(ModalitySpec("image", (1, 32, 32), "image"), {"kind": "timm", "name": "resnet18"})
    assert enc.out_dim == 512 and enc(torch.randn(2, 1, 32, 32)).shape == (2, 512)


# --- kind: hf -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A randomly initialised one-layer BERT (hidden 16) saved to a local folder, as save_pretrained writes it."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=50,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_bert")
    transformers.AutoModel.from_config(config).save_pretrained(str(folder))
    return folder


def test_hf_without_the_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError) as err:
        build_encoder(SEQUENCE, {"kind": "hf", "path": str(tmp_path)})
    assert 'pip install "dynmm[hf]"' in str(err.value) and "\n" not in str(err.value)


def test_hf_embeds_input_projects_to_the_hidden_size_and_pools(tiny_bert):
    enc = build_encoder(SEQUENCE, {"kind": "hf", "path": str(tiny_bert)}).eval()
    assert enc.out_dim == 16 and isinstance(enc.proj_in, nn.Linear) and enc.proj_in.in_features == 5
    x = torch.randn(3, 6, 5)
    with torch.no_grad():
        hidden = enc.model(inputs_embeds=enc.proj_in(x)).last_hidden_state
        torch.testing.assert_close(enc(x), hidden.mean(dim=1))
        first = build_encoder(SEQUENCE, {"kind": "hf", "path": str(tiny_bert), "pool": "first", "out_dim": 4}).eval()
        hidden = first.model(inputs_embeds=first.proj_in(x)).last_hidden_state
        torch.testing.assert_close(first(x), first.proj(hidden[:, 0]))
    assert first.out_dim == 4
    assert enc.training is False and build_encoder(SEQUENCE, {"kind": "hf", "path": str(tiny_bert)}).model.training


def test_hf_madds_are_counted_like_the_standalone_model(tiny_bert):
    enc = build_encoder(SEQUENCE, {"kind": "hf", "path": str(tiny_bert)})
    counted = measure_madds(enc, torch.randn(2, 6, 5)).total
    standalone = count_madds(lambda: enc.model.eval()(inputs_embeds=torch.zeros(1, 6, 16))).total
    assert counted > 0 and counted == standalone + 6 * 5 * 16  # + the input projection
    specs = {"seq": SEQUENCE}
    model = build_static_model(
        ModelConfig(fusion="concat", embed_dim=4, encoders={"seq": {"kind": "hf", "path": str(tiny_bert)}}),
        specs,
        TaskSpec("regression"),
    )
    by_module = measure_madds(model, {"seq": torch.randn(2, 6, 5)}).by_module
    assert by_module["StaticFusionModel.encoders.seq"] == counted + 16 * 4  # + the Linear to embed_dim


def test_hf_token_ids_with_padding_masked_out_of_the_mean(tiny_bert):
    ids_spec = ModalitySpec("tokens", (6,), "vector")
    enc = build_encoder(ids_spec, {"kind": "hf", "path": str(tiny_bert), "input": "ids", "pad_id": 0}).eval()
    assert isinstance(enc.proj_in, nn.Identity)
    ids = torch.tensor([[5.0, 7, 9, 0, 0, 0], [3, 4, 0, 0, 0, 0]])
    with torch.no_grad():
        out = enc(ids)
        for row, length in enumerate((3, 2)):
            alone = enc.model(input_ids=ids[row : row + 1, :length].long()).last_hidden_state.mean(dim=1)
            torch.testing.assert_close(out[row : row + 1], alone, atol=1e-5, rtol=1e-5)
        with pytest.raises(InputError, match="token ids must be integers"):
            enc(ids + 0.5)


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        (SEQUENCE, {"path": "no/such/folder"}, "path 'no/such/folder' is not a folder"),
        (SEQUENCE, {}, "kind 'hf' needs path"),
        (SEQUENCE, {"path": BERT, "pool": "max"}, "option 'pool' must be one of mean, first"),
        (VECTOR, {"path": BERT}, "a vector of token ids needs input: ids"),
        (SEQUENCE, {"path": BERT, "input": "ids"}, "input: ids reads a vector modality"),
        (SEQUENCE, {"path": BERT, "pad_id": 0}, "pad_id applies to input: ids only"),
        (ModalitySpec("long", (40, 5), "sequence"), {"path": BERT}, "exceeds the model's max_position_embeddings 32"),
        (SEQUENCE, {"path": BERT, "weights": "x"}, "unknown option(s) 'weights' for kind 'hf'"),
    ],
)
def test_hf_errors(tiny_bert, spec, options, message):
    options = {k: str(tiny_bert) if v is BERT else v for k, v in options.items()}
    with pytest.raises(ConfigError) as err:
        build_encoder(spec, {"kind": "hf", **options})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_hf_folder_without_a_model_is_one_line(tiny_bert, tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(ConfigError, match="transformers could not load a model from") as err:
        build_encoder(SEQUENCE, {"kind": "hf", "path": str(tmp_path)})
    assert "\n" not in str(err.value)
