"""Cost counts against hand-computed multiply-add formulas."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynmm.cost import count_madds, count_parameters, madds_per_sample, measure_madds


class _Wrap(nn.Module):
    """Models in dynmm take a dict of modalities; wrap a plain layer the same way."""

    def __init__(self, layer: nn.Module, key: str = "x") -> None:
        super().__init__()
        self.layer, self.key = layer, key

    def forward(self, inputs):
        out = self.layer(inputs[self.key])
        return out[0] if isinstance(out, tuple) else out


def test_linear_counts_in_times_out_per_sample():
    model = _Wrap(nn.Linear(10, 20))
    report = measure_madds(model, {"x": torch.randn(7, 10)})
    assert report.total == 10 * 20  # one sample, bias adds not counted


def test_conv2d_counts_cout_cin_k2_hw():
    model = _Wrap(nn.Conv2d(3, 8, kernel_size=3, padding=1, stride=2))
    report = measure_madds(model, {"x": torch.randn(4, 3, 10, 12)})
    h_out, w_out = 5, 6
    assert report.total == 8 * 3 * 3 * 3 * h_out * w_out


@pytest.mark.parametrize("bidirectional,num_layers", [(False, 1), (True, 2)])
def test_lstm_counts_four_gates_per_step(bidirectional, num_layers):
    seq, in_dim, hidden = 6, 10, 16
    lstm = nn.LSTM(in_dim, hidden, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    report = measure_madds(_Wrap(lstm), {"x": torch.randn(3, seq, in_dim)})
    dirs = 2 if bidirectional else 1
    expected = 0
    layer_in = in_dim
    for _ in range(num_layers):
        expected += dirs * seq * 4 * hidden * (layer_in + hidden)
        layer_in = hidden * dirs
    assert report.total == expected


def test_gru_counts_three_gates_per_step():
    seq, in_dim, hidden = 5, 10, 20
    report = measure_madds(_Wrap(nn.GRU(in_dim, hidden, batch_first=True)), {"x": torch.randn(2, seq, in_dim)})
    assert report.total == seq * 3 * hidden * (in_dim + hidden)


def test_scaled_dot_product_attention_formula():
    b, h, lq, lk, e = 2, 3, 5, 7, 8
    q, k, v = torch.randn(b, h, lq, e), torch.randn(b, h, lk, e), torch.randn(b, h, lk, e)
    report = count_madds(lambda: F.scaled_dot_product_attention(q, k, v))
    assert report.total == b * h * lq * lk * 2 * e


def test_multihead_attention_in_eval_counts_projections_and_attention():
    seq, dim, heads = 5, 16, 2
    mha = nn.MultiheadAttention(dim, heads, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, inputs):
            x = inputs["x"]
            return self.mha(x, x, x, need_weights=False)[0]

    report = measure_madds(SelfAttention(), {"x": torch.randn(4, seq, dim)})
    projections = 3 * seq * dim * dim + seq * dim * dim
    attention = heads * seq * seq * 2 * (dim // heads)
    assert report.total == projections + attention
    assert torch.backends.mha.get_fastpath_enabled()  # restored after counting


def test_measure_uses_one_sample_and_restores_mode():
    model = _Wrap(nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5)))
    model.train()
    one = measure_madds(model, {"x": torch.randn(32, 4)}).total
    assert one == 4 * 6
    assert model.training
    assert madds_per_sample(model, {"x": torch.randn(32, 4)}) == pytest.approx(one)


def test_by_module_attributes_cost_to_submodules():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 5)
            self.b = nn.Linear(5, 3)

        def forward(self, inputs):
            return self.b(self.a(inputs["x"]))

    report = measure_madds(Two(), {"x": torch.randn(2, 4)})
    assert report.by_module["Two.a"] == 20
    assert report.by_module["Two.b"] == 15
    assert report.total == 35


def test_count_parameters():
    layer = nn.Linear(3, 2)
    layer.bias.requires_grad_(False)
    assert count_parameters(layer) == 8
    assert count_parameters(layer, trainable_only=True) == 6
