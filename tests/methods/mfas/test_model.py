import json

import pytest
import torch

from dynmm.errors import DataError, InputError
from dynmm.methods.mfas.model import MFASModel, load_found, save_found
from dynmm.methods.mfas.space import FusionNetwork, LayerChoice, to_json

ARCH = (LayerChoice((1, 3), 0), LayerChoice((2, 0), 2))


@pytest.fixture
def found(space, backbones, cache):
    torch.manual_seed(0)
    network = FusionNetwork(space, ARCH, 5, 3).eval()
    return MFASModel(backbones, cache.standardizers, network)


def test_model_on_raw_inputs_equals_network_on_cached_features(found, splits, cache):
    rows = torch.arange(6)
    raw = {m: splits["test"].inputs[m][rows] for m in ("image", "audio")}
    cached = cache.features("test", rows, list(found.network.input_dims))
    torch.testing.assert_close(found(raw), found.network(cached), rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="MFASModel: missing modality 'audio'"):
        found({"image": raw["image"]})


def test_saved_model_loads_to_the_same_outputs(found, space, backbones, splits, tmp_path):
    save_found(tmp_path, found, space, to_json(ARCH), 5, {"name": space.describe(ARCH)})
    loaded = load_found(tmp_path, {b.modality: b.model for b in backbones})
    raw = {m: splits["valid"].inputs[m][:8] for m in ("image", "audio")}
    torch.testing.assert_close(loaded(raw), found(raw), rtol=0, atol=0)
    assert json.loads((tmp_path / "architecture.json").read_text())["name"] == space.describe(ARCH)


def test_loading_refuses_missing_files_and_backbones(found, space, backbones, tmp_path):
    with pytest.raises(DataError, match="architecture.json is missing"):
        load_found(tmp_path, {})
    save_found(tmp_path, found, space, to_json(ARCH), 5, {})
    with pytest.raises(DataError, match=r"no backbone given for \['audio'\]"):
        load_found(tmp_path, {"image": backbones[0].model})
    (tmp_path / "fusion.safetensors").write_bytes(b"truncated")
    with pytest.raises(DataError, match="does not hold a found MFAS model"):
        load_found(tmp_path, {b.modality: b.model for b in backbones})
