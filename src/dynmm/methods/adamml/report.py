"""report.html of an AdaMML run: accuracy vs MAdds per clip (AdaMML and the run's baselines), what the policy
keeps on informative and uninformative segments, and example clips with every segment marked kept or skipped.

Everything but the example clips comes from metrics.json (and RUN/speed.json once `dynmm bench adamml-speed RUN`
has measured it), so `dynmm report RUN` rebuilds it from the run folder (the examples rerun the exported model on
the first test clips).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dynmm.data.base import MultimodalDataset
from dynmm.errors import DataError
from dynmm.io import read_json
from dynmm.methods.adamml.model import AdaMML
from dynmm.modes import eval_mode
from dynmm.report.html import write_report

EXAMPLES = 3
SPEED_FILE = "speed.json"
"""Test clips drawn in the report, one row per modality each."""


def _rates(rates: dict[str, float]) -> str:
    return ", ".join(f"{m} {r:.3f}" for m, r in rates.items())


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    test = metrics["test"]
    out: dict[str, Any] = {
        "test accuracy": test["accuracy"],
        "MAdds per clip (policy included)": test["madds_per_clip"],
        "GMAdds per clip": test["gmadds_per_clip"],
        "late fusion, all segments: MAdds per clip": test["full_madds_per_clip"],
        "MAdds per clip / late fusion": test["madds_fraction"],
        "policy MAdds per clip": metrics["costs"]["policy"],
        "keep rate": _rates(test["keep_rate"]),
        "keep rate on uninformative segments (own modality)": _rates(test["keep_rate_uninformative"]),
        "keep rate on informative segments (own modality)": _rates(test["keep_rate_informative"]),
        "clips that kept nothing (fallback)": "-" if test["fallback_clips"] is None else test["fallback_clips"],
        "λ": _rates(metrics["lambdas"]),
        "valid accuracy": metrics["valid"]["accuracy"],
        "valid MAdds per clip / late fusion": metrics["valid"]["madds_fraction"],
    }
    for m, rates in metrics["keep_analysis"]["keep_rate_per_segment"].items():
        out[f"{m} keep rate by segment"] = " ".join(f"{r:.2f}" for r in rates)
    for baseline in metrics["baselines"].values():
        spread = f" ± {baseline['accuracy_std']:.4f}" if "accuracy_std" in baseline else ""
        out[f"{baseline['label']}: accuracy"] = f"{baseline['accuracy']:.4f}{spread}"
    return out


def keep_groups(by_flag: dict[str, Any], modalities: list[str]) -> dict[str, list[int]]:
    """Bars of (kept, skipped) test segments, labelled "<m>\n<n> ok|bad": each modality m on segments where
    it is informative / uninformative, and on segments where another modality n is uninformative (from the
    `<n>_bad` flags)."""
    groups: dict[str, list[int]] = {}
    for m in modalities:
        for n in modalities:
            flag = by_flag.get(f"{n}_bad")
            if flag is None:
                continue
            wanted = (("not_flagged", "ok"), ("flagged", "bad")) if n == m else (("flagged", "bad"),)
            for group, word in wanted:
                counts = flag[m][group]
                groups[f"{m}\n{n} {word}"] = [counts["kept"], counts["segments"] - counts["kept"]]
    return groups


def report_data(title: str, metrics: dict[str, Any]) -> dict[str, Any]:
    test = metrics["test"]
    analysis = metrics["keep_analysis"]
    segments = len(next(iter(analysis["keep_rate_per_segment"].values())))
    kept = round(sum(test["keep_rate"].values()) * segments * test["clips"])
    total = len(test["keep_rate"]) * segments * test["clips"]
    return {
        "title": f"AdaMML · {title}",
        "metric": "accuracy",
        "method": "AdaMML",
        "unit": "clip",
        "summary": summary(metrics),
        "pareto": {
            "experts": [
                {"name": b["label"], "madds": b["madds_per_clip"], "metric": b["accuracy"]}
                for b in metrics["baselines"].values()
            ],
            "dynmm": [{"label": "AdaMML", "madds": test["madds_per_clip"], "metric": test["accuracy"]}],
        },
        "routing": {
            "unit": "segment",
            "experts": ["kept", "skipped"],
            "counts": [kept, total - kept],
            "per_class": keep_groups(analysis["keep_by_flag"], list(test["keep_rate"])),
        },
    }


@torch.no_grad()
def examples(model: AdaMML, test: MultimodalDataset, count: int = EXAMPLES) -> list[dict[str, Any]]:
    """The first test clips: per modality a row of its T segments (channel 0), each titled kept/skip, with
    "(bad)" where the data flag `<m>_bad` marks the segment uninformative."""
    rows = []
    with eval_mode(model):
        for i in range(min(count, len(test))):
            inputs = {k: v[i : i + 1] for k, v in test.inputs.items()}
            predicted = int(model(inputs).argmax(dim=1)[0])
            assert model.last_keep is not None
            for m in model.modalities:
                bad = test.flags.get(f"{m}_bad")
                panels = {}
                for t in range(model.segments):
                    word = "kept" if float(model.last_keep[m][0, t]) > 0.5 else "skip"
                    flag = " (bad)" if bad is not None and bool(bad[i, t]) else ""
                    panels[f"t{t} {word}{flag}"] = inputs[m][0, t, 0].numpy()
                label = f"clip {i} {m}: {int(test.target[i])}→{predicted}"
                rows.append({"label": label, "panels": panels})
    return rows


def speed_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Dispatch vs late fusion speedups per batch size from RUN/speed.json (`dynmm bench adamml-speed RUN`)."""
    path = run_dir / SPEED_FILE
    if not path.is_file():
        return []
    fields = ("batch_size", "predicted_speedup", "realized_speedup")
    return [
        {"label": "dispatch vs late fusion", **{k: row[k] for k in fields}}
        for row in read_json(path, "dynmm bench adamml-speed's results").get("rows", [])
        if all(k in row for k in fields)
    ]


def write_adamml_report(
    run_dir: Path, metrics: dict[str, Any], model: AdaMML, test: MultimodalDataset, sweep: Path | None = None
) -> Path:
    """report.html from metrics.json's numbers, example test clips, when measured RUN/speed.json, and the other
    points of a λ sweep (`dynmm sweep`'s JSON) on the Pareto plot."""
    data = report_data(run_dir.name, metrics)
    data["pareto"]["dynmm"] += sweep_points(run_dir, sweep) if sweep is not None else []
    speed = speed_rows(run_dir)
    if speed:
        data["speed"] = speed
    data["examples"] = {
        "title": "Example test clips (each segment: kept or skipped by the policy; bad = uninformative)",
        "rows": examples(model, test),
    }
    return write_report(run_dir, data)


def sweep_points(run_dir: Path, sweep: Path) -> list[dict[str, Any]]:
    """The AdaMML points of a λ-sweep summary other than this run, as Pareto points labelled by λ."""
    summary = read_json(sweep, "a λ-sweep summary")
    if summary.get("method") != "adamml":
        raise DataError(f"{sweep} is not an AdaMML λ sweep (method {summary.get('method')!r})")
    return [
        {"label": f"λ={p['lambda']:g}", "madds": p["madds_per_sample"], "metric": p["metric"]}
        for p in summary["points"]
        if Path(p["run"]).resolve() != run_dir.resolve()
    ]


def rebuild_adamml_report(run_dir: Path, sweep: Path | None = None) -> Path:
    """`dynmm report RUN [--sweep JSON]` for an AdaMML run."""
    from dynmm.engine.export import load_finished
    from dynmm.methods.adamml.export import ADAMML_BUILDERS

    metrics, model, test = load_finished(run_dir, ADAMML_BUILDERS, AdaMML, "baselines", "AdaMML")
    return write_adamml_report(run_dir, metrics, model, test, sweep)
