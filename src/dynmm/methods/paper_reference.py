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
        explanation="not reported apart; the authors' gate picks one of 5 depth levels, this config's an op per "
        "cell (the 5 levels are among its 16 routings)",
    ),
)

NO_EXPERIMENT = {
    "mosi_affect": "the DynMM paper has no CMU-MOSI experiment (this config reuses its CMU-MOSEI networks)",
    "avmnist": "the DynMM paper has no AV-MNIST experiment",
    "avclips_adamml": "AdaMML's paper uses ResNet-50 / MobileNetV2 video networks on Kinetics-Sounds and similar; "
    "this config's nets are CPU-sized CNNs on AV digit clips, so its GFLOPs per video are not comparable",
}
"""Setups whose parts have no published reference, and why."""

NOT_REPORTED = "the paper reports no cost for this part"
