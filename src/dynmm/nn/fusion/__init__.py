"""Static fusion ops: dict of per-modality embeddings -> one tensor, built by name with `build_fusion`."""

# Importing the op modules registers them in FUSIONS.
from dynmm.nn.fusion import gated, late, multiplicative, simple, tensor, transformer  # noqa: F401
from dynmm.nn.fusion.base import Fusion
from dynmm.nn.fusion.registry import FUSIONS, build_fusion, fusion_class, fusion_options, register_fusion

__all__ = ["FUSIONS", "Fusion", "build_fusion", "fusion_class", "fusion_options", "register_fusion"]
