"""A found MFAS architecture as one model on raw inputs: frozen backbones → candidate layers → fusion network.

Why: the search trains fusion networks on cached features; a user deploys them on raw modalities. This wraps
the same backbones, the cache's standardisation and the trained fusion network, so its output on a batch equals
the fusion network's on that batch's cached features (tested). `save_found` / `load_found` store it as
safetensors + JSON next to the search (the backbones stay in their own runs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from dynmm.errors import ConfigError, DataError
from dynmm.io import atomic_write, atomic_write_json
from dynmm.methods.mfas.backbones import Backbone, tap_kind
from dynmm.methods.mfas.feature_cache import LiveFeatures, Standardizer
from dynmm.methods.mfas.space import FusionNetwork, SearchSpace, from_json
from dynmm.nn.static_model import StaticFusionModel
from dynmm.specs import Inputs
from dynmm.validation import check_inputs

WEIGHTS, DESCRIPTION = "fusion.safetensors", "architecture.json"
BACKBONE_WEIGHTS = "backbones.safetensors"
"""Present only in a fine-tuned found model: its backbones' own weights (they no longer equal their runs')."""


class MFASModel(nn.Module):
    """Frozen backbones, each run whole, and the fusion network the search found.

    Args:
        backbones: one per fused modality.
        standardizers: feature key -> the train-split standardisation the network was trained with.
        network: the trained fusion network.

    Inputs:
        inputs: modality -> (batch, *shape) for every fused modality, checked against the backbones' specs (float
            of the model's dtype, finite, batch >= 1) before any backbone runs; extra keys are ignored.
    """

    def __init__(
        self, backbones: Sequence[Backbone], standardizers: Mapping[str, Standardizer], network: FusionNetwork
    ) -> None:
        super().__init__()
        self.backbone_models = nn.ModuleDict({b.modality: b.model for b in backbones})
        self.keys = sorted(network.input_dims)
        self.standardizers = {k: standardizers[k] for k in self.keys}
        self._live = LiveFeatures(backbones, {}, self.standardizers)
        self.network = network
        fused = {k.split(".", 1)[0] for k in self.keys}
        self.specs = {b.modality: b.model.specs[b.modality] for b in backbones if b.modality in fused}
        self.trainable = False
        """True while fine-tuning: the backbones run in the model's mode and with gradients, not frozen."""

    def forward(self, inputs: Inputs) -> Tensor:
        check_inputs(inputs, self.specs, where=type(self).__name__, model=self)
        return self.network(self._live.compute(inputs, self.keys, trainable=self.trainable))


def save_found(
    folder: Path,
    model: MFASModel,
    space: SearchSpace,
    architecture_json: list[list[int]],
    width: int,
    extra: dict[str, Any],
    with_backbones: bool = False,
) -> None:
    """Weights (fusion network + standardisation of the features it reads; with `with_backbones`, the backbones'
    own weights too, for a fine-tuned model) first, then the description."""
    tensors = {f"network.{k}": v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}
    for key in model.keys:
        tensors |= {f"standardize.{k}": v.cpu() for k, v in model.standardizers[key].tensors(key).items()}
    if with_backbones:
        own = {
            f"{m}.{k}": v.detach().cpu().contiguous()
            for m, backbone in model.backbone_models.items()
            for k, v in backbone.state_dict().items()
        }
        atomic_write(folder / BACKBONE_WEIGHTS, lambda tmp: save_file(own, str(tmp)))
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    description = {
        "architecture": architecture_json,
        "width": width,
        "modalities": list(space.modalities),
        "layers": {m: list(space.layer_names[m]) for m in space.modalities},
        "dims": {m: list(space.layer_dims[m]) for m in space.modalities},
        "activations": list(space.activations),
        "max_layers": space.max_layers,
        "out_dim": model.network.head.out_features,
    } | extra
    atomic_write_json(folder / DESCRIPTION, description)


def load_found(folder: Path, backbones: Mapping[str, StaticFusionModel]) -> MFASModel:
    """Rebuild a saved found model around its (already loaded) backbone models; a fine-tuned one loads its own
    backbone weights into copies of them (the given models stay as they are)."""
    desc_path, weights_path = folder / DESCRIPTION, folder / WEIGHTS
    for path in (desc_path, weights_path):
        if not path.is_file():
            raise DataError(f"no found MFAS model here: {path} is missing (did the search finish?)")
    try:
        d = json.loads(desc_path.read_text())
        space = SearchSpace(
            tuple(d["modalities"]),
            {m: tuple(v) for m, v in d["layers"].items()},
            {m: tuple(v) for m, v in d["dims"].items()},
            tuple(d["activations"]),
            int(d["max_layers"]),
        )
        network = FusionNetwork(space, from_json(d["architecture"]), int(d["width"]), int(d["out_dim"]))
        tensors = load_file(str(weights_path))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, SafetensorError) as err:
        raise DataError(f"{folder} does not hold a found MFAS model ({err})") from err
    missing = [m for m in space.modalities if m not in backbones]
    if missing:
        raise DataError(f"{folder}: no backbone given for {missing}")
    if (folder / BACKBONE_WEIGHTS).is_file():
        backbones = _fine_tuned_backbones(folder / BACKBONE_WEIGHTS, {m: backbones[m] for m in space.modalities})
    wrapped = []
    for m in space.modalities:
        saved = space.layer_names[m]
        try:
            backbone = Backbone(backbones[m], sorted({tap_kind(name) for name in saved}))
        except ConfigError as err:
            raise DataError(f"{folder}: the {m!r} backbone does not match the saved search ({err})") from err
        if backbone.names != saved:
            raise DataError(f"{folder}: the {m!r} backbone's layers {backbone.names} differ from the saved {saved}")
        wrapped.append(backbone)
    state = {k.removeprefix("network."): v for k, v in tensors.items() if k.startswith("network.")}
    try:
        network.load_state_dict(state)
        standardizers = {k: Standardizer.from_tensors(tensors, f"standardize.{k}") for k in network.input_dims}
    except (RuntimeError, KeyError) as err:
        raise DataError(f"{weights_path} does not match {desc_path}: {err}") from err
    return MFASModel(wrapped, standardizers, network.eval())


def _fine_tuned_backbones(path: Path, backbones: Mapping[str, StaticFusionModel]) -> dict[str, StaticFusionModel]:
    """Copies of `backbones` holding the fine-tuned weights saved at `path`."""
    try:
        tensors = load_file(str(path))
    except SafetensorError as err:
        raise DataError(f"{path} does not hold fine-tuned backbone weights ({err})") from err
    tuned = {}
    for modality, backbone in backbones.items():
        copy = deepcopy(backbone)
        state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == modality}
        try:
            copy.load_state_dict(state)
        except RuntimeError as err:
            raise DataError(f"{path}: the {modality!r} backbone's weights do not fit its run's model: {err}") from err
        tuned[modality] = copy
    return tuned
