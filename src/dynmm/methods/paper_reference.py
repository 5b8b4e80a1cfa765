"""The papers' reported costs (and the authors' code's, where it differs), for `dynmm bench paper-costs`.

These numbers are citations, not measurements: each says where it comes from. dynmm's own numbers are always
measured (FlopCounterMode). `explanation` says why a measured part may differ by more than 5 % from its
reference, or why a part has no reference at all; the bench prints it only where that is the case.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    setup: str
    part: str
    paper: float | None
    """MAdds per sample the paper reports (None: the paper reports none for this part)."""
    authors_code: float | None = None
    """MAdds per sample of the authors' released code where it differs from the paper or the paper has none
    (`source` says who counted it)."""
    source: str = ""
    explanation: str = ""


DYNMM_PAPER = "Xue & Marculescu, Dynamic Multimodal Fusion, CVPR 2023 (MAdds tables)"
DYNMM_CODE = "the networks of the authors' code (zihuixue/DynMM), counted as dynmm counts"
ADAMML_PAPER = (
    "Panda et al., AdaMML, ICCV 2021, and its authors' code (IBM/AdaMML); the paper reports GFLOPs per video of "
    "whole models only, with 8 RGB frames per segment where this config reads one"
)
MFAS_CODE = (
    "the AV-MNIST backbones of the MFAS authors' code (juanmanpr/mfas: GP_LeNet, GP_LeNet_Deeper), counted as "
    "dynmm counts; the MFAS paper reports no MAdds"
)
DYNMM_FUSION_CODE = "zihuixue/DynMM FusionDynMM model_skip_mod_globalgate.py, ResNet-50 `total_flop` (their count)"

REFERENCES: tuple[Reference, ...] = (
    Reference("mmimdb", "expert text", 0.7e6, source=DYNMM_PAPER),
    Reference("mmimdb", "expert late_fusion", 10.3e6, source=DYNMM_PAPER),
    Reference(
        "mmimdb",
        "gate",
        None,
        authors_code=0.563e6,
        source=DYNMM_CODE + " (imdb_dyn.py: gate MLP(4396, 128, 2))",
    ),
    Reference(
        "mosei",
        "expert text",
        124.7e6,
        authors_code=142.1e6,
        source=DYNMM_PAPER + "; " + DYNMM_CODE,
        explanation="the paper's counter omits attention; the authors' code with attention is the reference",
    ),
    Reference(
        "mosei",
        "expert late_fusion",
        309.6e6,
        authors_code=349.5e6,
        source=DYNMM_PAPER + "; " + DYNMM_CODE,
        explanation="the paper's counter omits attention; the authors' code with attention is the reference",
    ),
    Reference(
        "mosei",
        "gate",
        None,
        authors_code=10.4e6,
        source=DYNMM_CODE + " (affect_dyn.py: MultiBench Transformer(409, 10) + Linear(10, 2))",
    ),
    Reference(
        "nyuv2",
        "depth encoder",
        24.7e9,
        source=DYNMM_PAPER,
    ),
    Reference(
        "nyuv2",
        "path: RGB only",
        None,
        authors_code=32.585e9,
        source=DYNMM_FUSION_CODE,
    ),
    Reference(
        "nyuv2",
        "path: depth fused in every cell",
        None,
        authors_code=57.014e9,
        source=DYNMM_FUSION_CODE,
    ),
    Reference(
        "nyuv2",
        "gate",
        None,
        source=DYNMM_PAPER,
        explanation="not reported apart, by the paper or the authors' count (their gate, like this config's "
        "`routing: levels`, picks one of 5 depth levels from the stems)",
    ),
    Reference(
        "avmnist_mfas",
        "backbone image",
        None,
        authors_code=4.536e6,
        source=MFAS_CODE + " (GP_LeNet: LeNet-3, 24 channels, + Linear(96, 10))",
    ),
    Reference(
        "avmnist_mfas",
        "backbone audio",
        None,
        authors_code=137.586e6,
        source=MFAS_CODE + " (GP_LeNet_Deeper: LeNet-5, 24 channels, + Linear(384, 10))",
    ),
    Reference(
        "kinetics_sounds_adamml",
        "net rgb per segment",
        None,
        authors_code=4.09e9,
        source="ResNet-50 at 224x224, torchvision's published count (4.09 G multiply-adds per frame); this config "
        "reads one frame per segment, the authors' code 8 (8 times this)",
    ),
    Reference(
        "kinetics_sounds_adamml",
        "net audio per segment",
        None,
        source=ADAMML_PAPER,
        explanation="no published count: MobileNetV2 on a 1x256x256 log spectrogram (MobileNetV2 is 0.30 G at "
        "3x224x224, the MobileNetV2 paper's count)",
    ),
    Reference(
        "kinetics_sounds_adamml",
        "policy per segment",
        None,
        source=ADAMML_PAPER,
        explanation="not reported apart: two MobileNetV2 at 160x160, a 2048-wide joint MLP and an LSTM of 256",
    ),
)

NO_EXPERIMENT = {
    "mosi_affect": "the DynMM paper has no CMU-MOSI experiment (this config reuses its CMU-MOSEI networks)",
    "avmnist": "the DynMM paper has no AV-MNIST experiment",
    "avclips_adamml": "a CPU-sized AdaMML on AV digit clips, not a paper setup: its nets are small CNNs; "
    "configs/kinetics_sounds/adamml.yaml builds the paper's ResNet-50 / MobileNetV2 networks",
}
"""Setups whose parts have no published reference, and why."""

NOT_REPORTED = "the paper reports no cost for this part"
