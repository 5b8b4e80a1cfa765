"""Evaluation of AdaMML as deployed (dispatch mode, argmax policy) and of the baselines one run provides.

For the model: accuracy, realized MAdds per clip (policy included) in absolute terms, in GMAdds and as a
fraction of late fusion over every segment, keep rate per modality (overall, per segment position, and on the
segments a data flag marks, e.g. avclips' `image_bad` / `audio_bad`: does the policy skip what is uninformative?)
and how many clips kept nothing and fell back to one segment of the fallback modality.

Baselines, all measured on the same split in dispatch mode (`BASELINES` says what each one is).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from dynmm.data.base import MultimodalDataset, collate
from dynmm.methods.adamml.model import AdaMML, PolicyMode
from dynmm.modes import eval_mode
from dynmm.report.metrics import build_metrics
from dynmm.specs import TaskSpec

HEADLINE = ("accuracy", "macro_f1", "loss", "madds_per_clip", "madds_fraction", "gmadds_per_clip", "keep_rate")
RANDOM_SEEDS = (0, 1, 2)
BASELINES: dict[str, str] = {
    "late_fusion": "late fusion, all segments: every net on every segment, no policy; {source}",
    "alone": "{m} alone, all segments: only {m}'s net, on every segment (its logits averaged over the segments), "
    "no policy; {source}",
    "random": "random policy, same keep rate: the final model with the policy replaced by independent random "
    "keep decisions at AdaMML's measured per-modality test keep rates; mean and std over seeds {seeds}",
    "final_all": "final nets, all segments: the final model (nets after finetune) keeping every segment, no policy",
}
TRAINED = "trained from scratch on its own for as many epochs as AdaMML's three phases together"
WARMUP = "read off AdaMML's warmup weights (trained only for the warmup phase's epochs)"


@dataclass
class Record:
    """What a model did on every clip of a split, in row order: logits, keep masks (after the fallback),
    realized MAdds, and which clips' policy kept nothing (None when no policy ran)."""

    logits: Tensor
    target: Tensor
    keep: dict[str, Tensor]
    madds: Tensor
    fell_back: Tensor | None


@torch.no_grad()
def collect(model: AdaMML, data: MultimodalDataset, batch_size: int = 64) -> Record:
    """Run `model` in eval mode over `data` in order, in its current policy and execution modes."""
    logits, keeps, madds, empty = [], [], [], []
    with eval_mode(model):
        for inputs, _ in DataLoader(data, batch_size=batch_size, collate_fn=collate):
            logits.append(model(inputs))
            assert model.last_keep is not None
            keeps.append({m: k > 0.5 for m, k in model.last_keep.items()})
            madds.append(model.realized_madds(model.last_keep, model.last_policy_ran))
            if model.last_policy_ran:
                assert model.last_fell_back is not None
                empty.append(model.last_fell_back.cpu())
    keep = {m: torch.cat([k[m] for k in keeps]) for m in model.modalities}
    fell_back = torch.cat(empty) if len(empty) == len(logits) else None
    return Record(torch.cat(logits), data.target, keep, torch.cat(madds), fell_back)


def _rate(keep: Tensor) -> float:
    return float(keep.double().mean()) if keep.numel() else float("nan")


def headline(model: AdaMML, record: Record, task: TaskSpec) -> dict[str, Any]:
    """Accuracy (and the task's other metrics), CE loss, realized MAdds per clip and keep rate per modality."""
    metrics = build_metrics(task)
    metrics.update(record.logits, record.target)
    madds = float(record.madds.mean())
    return {
        **{name: float(value) for name, value in metrics.compute().items()},
        "loss": float(F.cross_entropy(record.logits, record.target.long())),
        "madds_per_clip": madds,
        "madds_fraction": madds / model.full_madds(),
        "gmadds_per_clip": madds / 1e9,
        "keep_rate": {m: _rate(k) for m, k in record.keep.items()},
    }


def keep_by_flag(record: Record, flags: Mapping[str, Tensor]) -> dict[str, Any]:
    """Per segment flag ((clips, T) bool), per modality: kept segments, segments and keep rate among the
    flagged segments and among the others."""
    out: dict[str, Any] = {}
    for flag, mask in flags.items():
        if mask.dim() != 2 or mask.shape != next(iter(record.keep.values())).shape:
            continue  # a per-clip flag says nothing about segments
        out[flag] = {
            m: {
                group: {"kept": int(keep[rows].sum()), "segments": int(rows.sum()), "rate": _rate(keep[rows])}
                for group, rows in (("flagged", mask), ("not_flagged", ~mask))
            }
            for m, keep in record.keep.items()
        }
    return out


def evaluate_adamml(model: AdaMML, data: MultimodalDataset, task: TaskSpec, batch_size: int = 64) -> dict[str, Any]:
    """Headline numbers, keep rates per segment position and per data flag (with the headline pair
    `keep_rate_uninformative` / `keep_rate_informative` from each modality's `<m>_bad` flag when the data have
    it), fallback clips, and the MAdds of full late fusion for reference."""
    record = collect(model, data, batch_size)
    by_flag = keep_by_flag(record, data.flags)
    bad = {m: by_flag[f"{m}_bad"][m] for m in model.modalities if f"{m}_bad" in by_flag}
    return {
        **headline(model, record, task),
        "clips": len(data),
        "full_madds_per_clip": model.full_madds(),
        "keep_rate_uninformative": {m: groups["flagged"]["rate"] for m, groups in bad.items()},
        "keep_rate_informative": {m: groups["not_flagged"]["rate"] for m, groups in bad.items()},
        "keep_rate_per_segment": {m: k.double().mean(dim=0).tolist() for m, k in record.keep.items()},
        "keep_by_flag": by_flag,
        "fallback_clips": None if record.fell_back is None else int(record.fell_back.sum()),
    }


@contextmanager
def policy_mode(
    model: AdaMML, mode: PolicyMode, keep_rate: Mapping[str, float] | None = None, seed: int | None = None
) -> Iterator[AdaMML]:
    """Run `model` with another policy mode for a while; its mode and keep rates are restored afterwards."""
    previous, rates = model.policy_mode, dict(model.keep_rate)
    model.set_policy_mode(mode, keep_rate, seed)
    try:
        yield model
    finally:
        model.set_policy_mode(previous, rates)


def _point(model: AdaMML, data: MultimodalDataset, task: TaskSpec, batch_size: int, label: str) -> dict[str, Any]:
    numbers = headline(model, collect(model, data, batch_size), task)
    return {"label": label, **{k: numbers[k] for k in ("accuracy", "madds_per_clip", "madds_fraction", "keep_rate")}}


def baselines(
    model: AdaMML,
    states: Mapping[str, Mapping[str, Tensor]],
    data: MultimodalDataset,
    task: TaskSpec,
    keep_rate: Mapping[str, float],
    batch_size: int = 64,
    seeds: Sequence[int] = RANDOM_SEEDS,
) -> dict[str, Any]:
    """The baselines of `BASELINES` on `data`. `states` holds the weights of "late_fusion" and "<m>_alone" when
    they were trained on their own, and "warmup" (AdaMML's weights after its warmup phase) for the ones that
    were not; `keep_rate` is AdaMML's measured keep rate per modality (what the random policy matches)."""
    out: dict[str, Any] = {}
    for m in (None, *model.modalities):
        name = "late_fusion" if m is None else f"{m}_alone"
        trained = name in states
        net = copy.deepcopy(model)
        net.load_state_dict(dict(states[name if trained else "warmup"]))
        source = TRAINED if trained else WARMUP
        if m is None:
            with policy_mode(net, "all"):
                out[name] = _point(net, data, task, batch_size, "late fusion, all segments")
            out[name]["description"] = BASELINES["late_fusion"].format(source=source)
            continue
        alone = {n: float(n == m) for n in model.modalities}
        with policy_mode(net, "random", alone, seed=0):
            out[name] = _point(net, data, task, batch_size, f"{m} alone, all segments")
        out[name]["description"] = BASELINES["alone"].format(m=m, source=source)
        out[name]["trained_alone"] = trained
    out["late_fusion"]["trained_alone"] = "late_fusion" in states
    runs = []
    for seed in seeds:
        with policy_mode(model, "random", keep_rate, seed=seed):
            runs.append(_point(model, data, task, batch_size, "random policy"))
    accuracy = torch.tensor([r["accuracy"] for r in runs], dtype=torch.float64)
    madds = torch.tensor([r["madds_per_clip"] for r in runs], dtype=torch.float64)
    out["random_policy"] = {
        "label": "random policy, same keep rate",
        "accuracy": float(accuracy.mean()),
        "accuracy_std": float(accuracy.std()) if len(runs) > 1 else 0.0,
        "madds_per_clip": float(madds.mean()),
        "madds_per_clip_std": float(madds.std()) if len(runs) > 1 else 0.0,
        "madds_fraction": float(madds.mean()) / model.full_madds(),
        "keep_rate": {m: sum(r["keep_rate"][m] for r in runs) / len(runs) for m in model.modalities},
        "target_keep_rate": dict(keep_rate),
        "seeds": list(seeds),
        "description": BASELINES["random"].format(seeds=list(seeds)),
    }
    with policy_mode(model, "all"):
        out["final_all"] = _point(model, data, task, batch_size, "final nets, all segments")
    out["final_all"]["description"] = BASELINES["final_all"]
    return out


def evaluate_adamml_run(
    model: AdaMML,
    states: Mapping[str, Mapping[str, Tensor]],
    splits: Mapping[str, MultimodalDataset],
    task: TaskSpec,
    batch_size: int = 64,
) -> dict[str, Any]:
    """metrics.json's evaluation part: valid headline numbers, test numbers (`keep_analysis`: the test keep rates
    per segment position and per data flag) and the test baselines."""
    valid = evaluate_adamml(model, splits["valid"], task, batch_size)
    test = evaluate_adamml(model, splits["test"], task, batch_size)
    analysis = ("keep_rate_per_segment", "keep_by_flag")
    return {
        "valid": {k: valid[k] for k in (*HEADLINE, "fallback_clips")},
        "test": {k: v for k, v in test.items() if k not in analysis},
        "keep_analysis": {k: test[k] for k in analysis},
        "baselines": baselines(model, states, splits["test"], task, test["keep_rate"], batch_size),
    }
