"""The fusion-level artifact: one graph per image whose If nodes skip the depth stages and ops the gate did not
choose; outside dynmm and torch it gives dispatch's logits and every cell's op."""

import pytest
import torch

pytest.importorskip("onnxscript")

from dynmm.errors import ConfigError  # noqa: E402
from dynmm.methods.fusion_level.deploy import FusionGraph  # noqa: E402
from dynmm.methods.fusion_level.deploy_run import write_fusion_artifact  # noqa: E402
from dynmm.methods.fusion_level.model import FusionLevelDynMM  # noqa: E402

SIZE = (32, 48)


def spread_model():
    """A tiny model whose gate is pushed to route images apart (several depth stage counts and ops)."""
    torch.manual_seed(0)
    model = FusionLevelDynMM("tiny", 5, SIZE, decoder_width=16, gate_width=8).eval()
    torch.nn.init.normal_(model.gate.head.weight, std=10.0)
    with torch.no_grad():
        model.gate.head.bias.view(model.num_cells, -1)[:, model.op_names.index("identity")] += 4.0
    return model


def test_artifact_matches_dispatch_per_image(tmp_path):
    model = spread_model()
    g = torch.Generator().manual_seed(1)
    scale = torch.logspace(-1, 1, 24)[:, None, None, None]  # images far apart, so the gate routes them apart
    rgb, depth = torch.randn(24, 3, *SIZE, generator=g) * scale, torch.randn(24, 1, *SIZE, generator=g) * scale.flip(0)
    inputs = {"rgb": rgb, "depth": depth}
    manifest = write_fusion_artifact(model, inputs, tmp_path / "art", {})
    check = manifest["verification"]
    assert check["passed"] and check["batch_1_same_routing"] == 1.0 and check["batch_1_max_abs_diff"] <= 1e-4
    with torch.no_grad():
        model(inputs)
    stages = model.aux_stages_needed(model.last_choice)
    assert len(stages.unique()) > 1, "the test needs images that run different numbers of depth stages"


def test_static_baseline_has_no_routing_to_export():
    model = spread_model()
    model.static_op = 1
    with pytest.raises(ConfigError, match="static fusion-level baseline"):
        FusionGraph(model)
