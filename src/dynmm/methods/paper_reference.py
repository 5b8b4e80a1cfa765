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
    """MAdds per sample of the authors' released code where it differs from the paper (counted by us)."""
    source: str = ""
    explanation: str = ""


DYNMM_PAPER = "Xue & Marculescu, Dynamic Multimodal Fusion, CVPR 2023 (MAdds tables)"
DYNMM_CODE = "the networks of the authors' code (zihuixue/DynMM), counted as dynmm counts"

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
        "path: every cell fused (costliest op)",
        None,
        source=DYNMM_PAPER,
        explanation="the paper reports no per-path cost; its cell has 2 ops (identity of RGB, SE-add), this "
        "config's 5 (the costliest is concat + 1x1 conv)",
    ),
    Reference(
        "nyuv2",
        "gate",
        None,
        source=DYNMM_PAPER,
        explanation="the paper reports no gate cost; the authors' gate makes its choices (and places SE) "
        "differently from this config's global conv gate",
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
