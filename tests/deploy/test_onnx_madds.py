"""The ONNX MAdds counter counts what FlopCounterMode counts (convolutions and matrix products, per row)."""

import pytest
import torch
from torch import nn

pytest.importorskip("onnxscript")

from dynmm.cost import count_madds  # noqa: E402
from dynmm.deploy.artifact import prepare_output  # noqa: E402
from dynmm.deploy.graphs import PositionalInputs, save_graph  # noqa: E402
from dynmm.deploy.onnx_madds import onnx_madds  # noqa: E402
from dynmm.errors import ConfigError  # noqa: E402


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, groups=1)
        self.depthwise = nn.Conv2d(6, 6, 3, groups=6)
        self.fc = nn.Linear(6 * 4 * 4, 5)
        self.proj = nn.Parameter(torch.randn(5, 7))

    def forward(self, inputs):
        x = torch.relu(self.depthwise(torch.relu(self.conv(inputs["image"]))))
        return self.fc(x.flatten(1)) @ self.proj


@pytest.mark.parametrize("dynamic", [False, True])
def test_onnx_count_equals_flop_counter(tmp_path, dynamic):
    torch.manual_seed(0)
    net = PositionalInputs(Net().eval(), ["image"])
    x = torch.randn(2 if dynamic else 1, 1, 8, 8)
    path = save_graph(net, [x], ["image"], ["outputs"], tmp_path / "net.onnx", "onnx", dynamic_batch=dynamic)
    per_row = count_madds(lambda: net(x[:1])).total
    assert per_row > 0 and onnx_madds(path) == pytest.approx(per_row, rel=1e-9)


def test_export_never_writes_into_a_folder_that_is_not_an_artifact(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="is not an artifact folder"):
        prepare_output(tmp_path / "results")
    assert (tmp_path / "results" / "metrics.json").read_text() == "{}"
    assert prepare_output(tmp_path / "new").is_dir()


def test_execution_providers_come_from_the_environment(monkeypatch):
    pytest.importorskip("onnxruntime")
    from dynmm.deploy.runner import PROVIDERS_VARIABLE, providers

    monkeypatch.delenv(PROVIDERS_VARIABLE, raising=False)
    assert providers() == ["CPUExecutionProvider"]
    monkeypatch.setenv(PROVIDERS_VARIABLE, "CUDAExecutionProvider,CPUExecutionProvider")
    assert providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
