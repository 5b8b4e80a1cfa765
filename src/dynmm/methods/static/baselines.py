"""Static fusion baselines: train every unimodal and static fusion model over several seeds, aggregate.

The spec file (configs/baselines.yaml) names, per data set, a base run config and the overrides that make each
model. Each (model, seed) is an ordinary run under runs/baselines[-quick]/, so a restarted benchmark reuses
finished runs whose saved configuration is identical.
"""

from __future__ import annotations

import platform
import statistics
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dynmm.config import RunConfig, deep_merge, from_dict, load_yaml
from dynmm.errors import ConfigError
from dynmm.io import atomic_write_json, atomic_write_text
from dynmm.methods.static.run import static_run_or_reuse as run_or_reuse

HEADLINE = {"mosi": ["acc2", "acc2_nonzero", "acc7", "mae", "corr"], "avdigits": ["accuracy", "macro_f1"]}


def baseline_configs(
    spec_path: Path, dataset: str, seeds: int, quick: bool, runs_root: Path
) -> dict[str, list[RunConfig]]:
    """Model label -> one RunConfig per seed, from the spec's base config and per-model overrides."""
    spec = load_yaml(spec_path)
    if dataset not in spec:
        raise ConfigError(f"{spec_path} has no entry for data set {dataset!r}; it has {sorted(spec)}")
    entry = spec[dataset]
    base = load_yaml(entry["base"])
    if quick:
        base = deep_merge(base, entry.get("quick", {}))
    models: dict[str, Any] = entry["models"]
    configs: dict[str, list[RunConfig]] = {}
    for label, overrides in models.items():
        raw = deep_merge(base, overrides or {})
        configs[label] = [
            from_dict(
                RunConfig,
                deep_merge(
                    raw,
                    {
                        "name": f"{dataset}_{label}_seed{seed}",
                        "seed": seed,
                        "output_dir": str(runs_root / ("baselines-quick" if quick else "baselines")),
                        "train": {"progress_bar": False},
                    },
                ),
            )
            for seed in range(seeds)
        ]
    return configs


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def aggregate(config: RunConfig, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "fusion": config.model.fusion,
        "modalities": config.model.modalities or "all",
        "test": {k: _summary([r["test"][k] for r in runs]) for k in runs[0]["test"]},
        "valid": {k: _summary([r["valid"][k] for r in runs]) for k in runs[0]["valid"]},
        "madds_per_sample": runs[0]["madds_per_sample"],
        "madds_by_part": runs[0]["madds_by_part"],
        "params": runs[0]["params"],
        "train_time_s": _summary([r["train_time_s"] for r in runs]),
        "epochs": [r["epochs"] for r in runs],
    }


def run_baselines(
    spec_path: Path, datasets: list[str], seeds: int, quick: bool, output: Path, runs_root: Path = Path("runs")
) -> dict[str, Any]:
    """Train (or reuse) every configured model for every seed; write JSON and a markdown table beside it."""
    plans = {d: baseline_configs(spec_path, d, seeds, quick, runs_root) for d in datasets}
    total = sum(len(runs) for plan in plans.values() for runs in plan.values())
    results: dict[str, Any] = {
        "seeds": seeds,
        "quick": quick,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} · {torch.get_num_threads()} torch threads",
        "datasets": {},
    }
    with tqdm(total=total, desc="baselines", unit="run") as progress:
        for dataset, plan in plans.items():
            models: dict[str, Any] = {}
            for label, configs in plan.items():
                runs = []
                for config in configs:
                    progress.set_postfix_str(config.name)
                    runs.append(run_or_reuse(config).metrics)
                    progress.update()
                models[label] = aggregate(configs[0], runs)
            results["datasets"][dataset] = models
            atomic_write_json(output, results)  # partial results survive an interruption
    atomic_write_json(output, results)
    atomic_write_text(output.with_suffix(".md"), markdown_table(results))
    return results


def table_rows(results: dict[str, Any], dataset: str) -> list[dict[str, str]]:
    """One row per model of `dataset`: headline test metrics as mean ± std over seeds, MAdds, params, time."""
    rows = []
    for label, entry in results["datasets"][dataset].items():
        row = {"model": label}
        for name in HEADLINE.get(dataset, list(entry["test"])):
            stats = entry["test"][name]
            row[name] = f"{stats['mean']:.3f}" + (f"±{stats['std']:.3f}" if len(stats["values"]) > 1 else "")
        row["MAdds/sample"] = f"{entry['madds_per_sample']:,}"
        row["params"] = f"{entry['params']:,}"
        row["train s"] = f"{entry['train_time_s']['mean']:.1f}"
        rows.append(row)
    return rows


def markdown_table(results: dict[str, Any]) -> str:
    """The README's tables: one per data set."""
    parts = []
    for dataset in results["datasets"]:
        rows = table_rows(results, dataset)
        header = list(rows[0])
        lines = [f"**{dataset}** (test split, {results['seeds']} seed(s))", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row[h] for h in header) + " |" for row in rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
