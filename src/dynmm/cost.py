"""Measured compute cost in multiply-adds (MAdds).

Why: the papers' code types FLOP constants in by hand, so a claimed saving can't be checked. Here every cost is
counted by running the real forward under `torch.utils.flop_counter.FlopCounterMode` (MAdds = FLOPs / 2), so the
count follows the code path that actually ran — including which experts a router skipped.

FlopCounterMode counts matmuls and convolutions; on CPU it counts 0 for a few fused kernels. We add formulas for:
- `aten.mkldnn_rnn_layer` (one LSTM layer/direction on CPU): T·B·4H·(I + H) MAdds (GRU decomposes into counted
  matmuls already);
- `aten._scaled_dot_product_flash_attention_for_cpu` (CPU scaled-dot-product attention): B·heads·Lq·Lk·(E + Ev);
and turn off PyTorch's fused multi-head-attention fast path while counting, so `nn.MultiheadAttention` and
`nn.TransformerEncoderLayer` decompose into counted projections plus the attention formula above.
Element-wise work (activations, norms, softmax) is not counted, as is conventional for MAdds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from dynmm.modes import eval_mode

aten = torch.ops.aten


def _lstm_layer_flops(
    input_shape: torch.Size, w_ih: torch.Size, w_hh: torch.Size, *args: Any, out_shape: Any = None, **kw: Any
) -> int:
    """FLOPs of one LSTM layer (one direction): every time step multiplies x_t by W_ih and h_{t-1} by W_hh."""
    steps_times_batch = math.prod(input_shape) // input_shape[-1]
    return 2 * steps_times_batch * (w_ih[0] * w_ih[1] + w_hh[0] * w_hh[1])


def _sdpa_flops(q: torch.Size, k: torch.Size, v: torch.Size, *args: Any, out_shape: Any = None, **kw: Any) -> int:
    """FLOPs of softmax(QK^T)V: Lq·Lk·E for the scores plus Lq·Lk·Ev for the weighted sum, per batch×head."""
    batch_heads = math.prod(q[:-2])
    return 2 * batch_heads * q[-2] * k[-2] * (q[-1] + v[-1])


EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    aten.mkldnn_rnn_layer: _lstm_layer_flops,
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
}


@dataclass
class MAddsReport:
    """Total MAdds of one counted call and the MAdds attributed to each submodule (FQN -> MAdds)."""

    total: int
    by_module: dict[str, int] = field(default_factory=dict)


@contextmanager
def _mha_fastpath_disabled() -> Iterator[None]:
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


@contextmanager
def counting_madds() -> Iterator[Callable[[], MAddsReport]]:
    """Count the MAdds of everything run inside the block; the yielded callable returns the report.

    Use it around the very forward a user runs (e.g. a dispatch-mode forward) to get the realized cost.
    """
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
    with _mha_fastpath_disabled(), counter:
        yield lambda: _report(counter)


def _report(counter: FlopCounterMode) -> MAddsReport:
    by_module = {name: sum(ops.values()) // 2 for name, ops in counter.get_flop_counts().items()}
    return MAddsReport(total=counter.get_total_flops() // 2, by_module=by_module)


def count_madds(fn: Callable[[], Any]) -> MAddsReport:
    """Run `fn()` once (no grad) and return the MAdds it executed."""
    with torch.no_grad(), counting_madds() as report:
        fn()
    return report()


def first_sample(inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The first row of every modality, keeping the batch dimension (a one-sample batch)."""
    return {name: x[:1] for name, x in inputs.items()}


def measure_madds(module: nn.Module, inputs: Mapping[str, Tensor] | Tensor) -> MAddsReport:
    """MAdds of `module` on ONE sample (the first row of `inputs`), in eval mode.

    Eval mode because inference cost is what a deployment pays (dropout/batch-norm statistics do not change
    the count, but some layers take other code paths in training). The module's mode is restored afterwards.
    """
    one = first_sample(inputs) if isinstance(inputs, Mapping) else inputs[:1]
    with eval_mode(module):
        return count_madds(lambda: module(one))


def madds_per_sample(module: nn.Module, inputs: Mapping[str, Tensor]) -> float:
    """Mean MAdds per sample of one forward over the whole batch (what a routed model really spent)."""
    batch = next(iter(inputs.values())).shape[0]
    with eval_mode(module):
        return count_madds(lambda: module(dict(inputs))).total / batch


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
