"""`dynmm bench paper-costs`: every paper setup's config built on inputs of the real shapes (no data files
needed: costs depend on shapes, not values), each part's MAdds measured with FlopCounterMode, next to the
paper's (or the authors' code's) number, the difference, and an explanation wherever they differ by more than
5 % or no reference exists."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dynmm.config import RunConfig, load_config, section_of
from dynmm.data.avmnist import AUDIO_SHAPE, IMAGE_SHAPE
from dynmm.data.avmnist import TASK as AVMNIST_TASK
from dynmm.data.mmimdb import MODALITIES as MMIMDB_MODALITIES
from dynmm.data.mmimdb import TASK as MMIMDB_TASK
from dynmm.data.nyuv2 import OFFICIAL_SIZE
from dynmm.data.nyuv2 import TASK as NYUV2_TASK
from dynmm.errors import ConfigError
from dynmm.methods.mfas.config import MFASConfig
from dynmm.methods.paper_reference import NO_EXPERIMENT, NOT_REPORTED, REFERENCES, Reference
from dynmm.specs import ModalitySpec, TaskSpec

TOLERANCE = 0.05
"""A measured part within this relative difference of its reference needs no explanation."""
AFFECT_STEPS = 50
AFFECT_WIDTHS = {"text": 300, "audio": 74, "vision": 35}
"""MultiBench's word-aligned affect pickles: 50 steps of GloVe text, COVAREP audio and Facet vision."""

ADAMML_SEGMENTS = 5
"""Segments per clip in the AdaMML authors' training command (`--num_segments 5`)."""

Parts = dict[str, float]


def _modality_level(config: RunConfig, specs: dict[str, ModalitySpec], task: TaskSpec) -> Parts:
    """Each expert alone and the gate, as the recipe builds them."""
    from dynmm.methods.modality_level.model import build_modality_level
    from dynmm.methods.modality_level.recipe import dynmm_section, expert_model
    from dynmm.nn.static_model import build_static_model

    section = dynmm_section(config)
    experts = [build_static_model(expert_model(config, e), specs, task) for e in section.experts]
    model = build_modality_level(experts, section.gate, specs)
    parts = {f"expert {e.name}": madds for e, madds in zip(section.experts, model.expert_madds, strict=True)}
    return {**parts, "gate": model.gate_madds}


def _fusion_level(config: RunConfig, specs: dict[str, ModalitySpec], task: TaskSpec) -> Parts:
    """The encoders, the gate and the two extreme paths: RGB only, and depth fused in every cell (with the
    costliest op the cells offer)."""
    from dynmm.methods.fusion_level.config import FusionLevelConfig
    from dynmm.methods.fusion_level.model import build_fusion_level

    costs = build_fusion_level(section_of(config, "fusion_level", FusionLevelConfig), specs, task).costs
    depth = costs["aux_stem"] + sum(costs["aux_stages"])
    fused = sum(max(cell) for cell in costs["cells"])
    rgb_only = sum(cell[0] for cell in costs["cells"])
    return {
        "depth encoder": depth,
        "rgb encoder + decoder": costs["fixed"],
        "gate": costs["gate"],
        "path: RGB only": costs["fixed"] + costs["gate"] + costs["aux_stem"] + costs["stem_fusion"] + rgb_only,
        "path: depth fused in every cell": costs["fixed"] + costs["gate"] + depth + costs["stem_fusion"] + fused,
    }


def _adamml(config: RunConfig, specs: dict[str, ModalitySpec], task: TaskSpec) -> Parts:
    """The policy per segment and each recognition net per segment."""
    from dynmm.methods.adamml.config import AdaMMLConfig
    from dynmm.methods.adamml.module import build_adamml

    model = build_adamml(section_of(config, "adamml", AdaMMLConfig), specs, task)
    nets = {f"net {m} per segment": madds for m, madds in model.costs["nets"].items()}
    return {"policy per segment": model.costs["policy"] / model.segments, **nets}


def _mfas(config: RunConfig, specs: dict[str, ModalitySpec], task: TaskSpec) -> Parts:
    """Each frozen unimodal backbone, whole (the search reads its blocks; the deepest block read bounds the cost)."""
    import torch

    from dynmm.cost import measure_madds
    from dynmm.methods.mfas.recipe import backbone_model_config
    from dynmm.nn.static_model import build_static_model

    parts = {}
    for modality in section_of(config, "mfas", MFASConfig).modalities or sorted(specs):
        model = build_static_model(backbone_model_config(config, modality), specs, task)
        one = {modality: torch.zeros(1, *specs[modality].shape)}
        parts[f"backbone {modality}"] = float(measure_madds(model, one).total)
    return parts


def _avmnist_specs() -> dict[str, ModalitySpec]:
    return {"image": ModalitySpec("image", IMAGE_SHAPE, "image"), "audio": ModalitySpec("audio", AUDIO_SHAPE, "image")}


def _kinetics_sounds() -> tuple[dict[str, ModalitySpec], TaskSpec]:
    """Kinetics-Sounds clips as the AdaMML authors feed them: T = 5 segments of a 224x224 RGB frame and a
    256x256 log spectrogram, 31 classes."""
    return {
        "rgb": ModalitySpec("rgb", (ADAMML_SEGMENTS, 3, 224, 224), "image"),
        "audio": ModalitySpec("audio", (ADAMML_SEGMENTS, 1, 256, 256), "image"),
    }, TaskSpec("classification", 31)


def _affect_specs() -> dict[str, ModalitySpec]:
    return {m: ModalitySpec(m, (AFFECT_STEPS, w), "sequence") for m, w in AFFECT_WIDTHS.items()}


def _avclips() -> tuple[dict[str, ModalitySpec], TaskSpec]:
    from dynmm.data.registry import dataset_info

    config = load_config("configs/avclips/adamml.yaml", [])
    info = dataset_info(config.data.name, **config.data.options)
    return dict(info.modalities), info.task


Setup = tuple[str, Callable[[], tuple[dict[str, ModalitySpec], TaskSpec]], Callable[..., Parts]]
SETUPS: dict[str, Setup] = {
    "mmimdb": (
        "configs/mmimdb/dynmm.yaml",
        lambda: ({m: ModalitySpec(m, (w,), "vector") for m, (_, w) in MMIMDB_MODALITIES.items()}, MMIMDB_TASK),
        _modality_level,
    ),
    "mosei": ("configs/affect/mosei_dynmm.yaml", lambda: (_affect_specs(), TaskSpec("regression", 1)), _modality_level),
    "mosi_affect": (
        "configs/affect/mosi_dynmm.yaml",
        lambda: (_affect_specs(), TaskSpec("regression", 1)),
        _modality_level,
    ),
    "avmnist": ("configs/avmnist/dynmm.yaml", lambda: (_avmnist_specs(), AVMNIST_TASK), _modality_level),
    "avmnist_mfas": ("configs/avmnist/mfas.yaml", lambda: (_avmnist_specs(), AVMNIST_TASK), _mfas),
    "nyuv2": (
        "configs/nyuv2/dynmm_fusion.yaml",
        lambda: (
            {
                "rgb": ModalitySpec("rgb", (3, *OFFICIAL_SIZE), "image"),
                "depth": ModalitySpec("depth", (1, *OFFICIAL_SIZE), "image"),
            },
            NYUV2_TASK,
        ),
        _fusion_level,
    ),
    "avclips_adamml": ("configs/avclips/adamml.yaml", _avclips, _adamml),
    "kinetics_sounds_adamml": ("configs/kinetics_sounds/adamml.yaml", _kinetics_sounds, _adamml),
}


def _row(setup: str, part: str, measured: float) -> dict[str, Any]:
    """One part: measured next to its reference, the difference, and why they differ (or why none exists)."""
    ref = next((r for r in REFERENCES if r.setup == setup and r.part == part), None) or Reference(setup, part, None)
    reference = ref.authors_code if ref.authors_code is not None else ref.paper
    row: dict[str, Any] = {
        "part": part,
        "measured": measured,
        "paper": ref.paper,
        "authors_code": ref.authors_code,
        "reference": reference,
        "source": ref.source,
        "difference": None if reference is None else (measured - reference) / reference,
        "explanation": None,
    }
    if reference is None:
        row["explanation"] = ref.explanation or NO_EXPERIMENT.get(setup, NOT_REPORTED)
    elif abs(row["difference"]) > TOLERANCE:
        row["explanation"] = ref.explanation or "no explanation recorded"
    return row


def paper_costs(setups: list[str] | None = None) -> dict[str, Any]:
    """Measured MAdds per sample of every part of every paper setup (or of `setups`), against the papers."""
    chosen = setups or list(SETUPS)
    unknown = [s for s in chosen if s not in SETUPS]
    if unknown:
        raise ConfigError(f"unknown paper setup(s) {unknown}; choose from {sorted(SETUPS)}")
    results = []
    for name in chosen:
        config_path, specs_and_task, measure = SETUPS[name]
        specs, task = specs_and_task()
        config = load_config(Path(config_path), [])
        parts = measure(config, specs, task)
        results.append(
            {
                "setup": name,
                "config": config_path,
                "inputs": {m: list(s.shape) for m, s in specs.items()},
                "parts": [_row(name, part, float(madds)) for part, madds in parts.items()],
            }
        )
    return {"tolerance": TOLERANCE, "unit": "MAdds per sample (per segment where named)", "setups": results}
