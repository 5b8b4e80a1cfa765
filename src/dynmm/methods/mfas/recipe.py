"""`dynmm search mfas CONFIG`: backbones → feature cache → MFAS and random search per seed → final training of
the top architectures → timing with and without the cache → results JSON and report. Resumable at every stage.

Layout of a search run directory:
    config.yaml                   the resolved configuration (a restart with another one is refused)
    backbones/<modality>/         one ordinary static run per backbone (unless `mfas.backbone_runs` names one)
    feature_cache/<hash>/         memmapped features (cache: memmap)
    searches/<kind>_seed<k>/      state.json + step weights (search.py), final.json once its top-k are trained
    timing.json                   wall-clock per evaluated architecture with and without the cache
    best/                         the best found fusion network (fusion.safetensors, architecture.json)
    best_finetuned/               with mfas.finetune_epochs: that model trained end to end (+ backbones.safetensors)
    mfas.json, report.html        the summary (also written to --output) and its report
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from dynmm.config import ModelConfig, RunConfig, deep_merge, dump_config, from_dict, section_of, to_dict
from dynmm.cost import measure_madds
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.engine.devices import torch_device
from dynmm.engine.export import exported_model_type
from dynmm.engine.run_folder import CONFIG_FILE, run_directory, saved_config_changes
from dynmm.engine.stages import data_module, stage_data
from dynmm.errors import ConfigError
from dynmm.io import atomic_write, atomic_write_json, atomic_write_text, read_json
from dynmm.methods.mfas.backbones import TAP_KINDS, Backbone
from dynmm.methods.mfas.config import MFASConfig
from dynmm.methods.mfas.evaluate_architecture import FusionTraining, WeightStore, train_architecture
from dynmm.methods.mfas.feature_cache import FeatureCache, LiveFeatures, cache_key
from dynmm.methods.mfas.finetune import finetune_found
from dynmm.methods.mfas.model import DESCRIPTION, MFASModel, save_found
from dynmm.methods.mfas.search import SearchSettings, SearchState, evaluation_seed, run_mfas, run_random
from dynmm.methods.mfas.space import ACTIVATIONS, Architecture, FusionNetwork, SearchSpace, from_json
from dynmm.methods.mfas.surrogate import SurrogateSettings
from dynmm.methods.static.export import load_static
from dynmm.methods.static.run import static_run_or_reuse
from dynmm.nn.static_model import StaticFusionModel
from dynmm.relax import TemperatureSchedule
from dynmm.report.evaluate import evaluate
from dynmm.specs import TaskSpec

SUMMARY = "mfas.json"
Progress = Callable[[str], None]


def mfas_section(config: RunConfig) -> MFASConfig:
    return section_of(config, "mfas", MFASConfig)


def search_metric(config: RunConfig, task: TaskSpec) -> str:
    """What the search maximises: `mfas.metric`, else accuracy (classes), acc2 (sentiment regression) or
    micro-F1 (multilabel)."""
    if task.kind == "segmentation":
        raise ConfigError(
            f"MFAS fuses pooled backbone features for classification or regression; {config.data.name!r} is a "
            "segmentation task"
        )
    allowed = {
        "regression": ("acc2", "acc2_nonzero", "acc7"),
        "multilabel": ("f1_micro", "f1_macro", "exact_match"),
    }.get(task.kind, ("accuracy", "macro_f1"))
    metric = mfas_section(config).metric or allowed[0]
    if metric not in allowed:
        raise ConfigError(f"mfas.metric must be a score in [0, 1] that grows with quality: one of {allowed}")
    return metric


def search_device(name: str) -> torch.device:
    """`mfas.device` as a torch device; "auto" takes CUDA when there is one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch_device(name, "mfas.device")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"mfas.device {name!r}: only cpu and cuda are supported")
    return device


def check_mfas_config(config: RunConfig) -> None:
    """What can be checked before a backbone trains."""
    mfas = mfas_section(config)
    if mfas.layers < 1 or mfas.width < 1 or mfas.samples_per_step < 1 or mfas.iterations < 1:
        raise ConfigError("mfas.layers, width, samples_per_step and iterations must be >= 1")
    if mfas.epochs_per_eval < 1 or mfas.final_epochs < 1 or mfas.top_k < 1:
        raise ConfigError("mfas.epochs_per_eval, final_epochs and top_k must be >= 1")
    if mfas.finetune_epochs < 0 or not mfas.finetune_backbone_lr > 0:
        raise ConfigError(
            f"mfas.finetune_epochs must be >= 0 and finetune_backbone_lr > 0, got {mfas.finetune_epochs}, "
            f"{mfas.finetune_backbone_lr}"
        )
    unknown = [a for a in mfas.activations if a not in ACTIVATIONS]
    if unknown or not mfas.activations:
        raise ConfigError(f"mfas.activations: unknown {unknown}; choose from {sorted(ACTIVATIONS)}")
    unknown_taps = sorted(set(mfas.candidate_layers) - set(TAP_KINDS))
    if unknown_taps or not mfas.candidate_layers:
        raise ConfigError(f"mfas.candidate_layers: unknown {unknown_taps}; choose among {list(TAP_KINDS)}")
    if mfas.cache not in ("memory", "memmap"):
        raise ConfigError(f"mfas.cache must be 'memory' or 'memmap', got {mfas.cache!r}")
    if not mfas.search_seeds or len(set(mfas.search_seeds)) != len(mfas.search_seeds):
        raise ConfigError(f"mfas.search_seeds must be distinct and not empty, got {mfas.search_seeds}")
    others = [key for key in config.present_sections() if key != "mfas"]
    if others:
        raise ConfigError(f"an `mfas` run config has no other method section; this one has {others}")
    from_dict(SurrogateSettings, mfas.surrogate, "mfas.surrogate")
    search_device(mfas.device)
    TemperatureSchedule("inverse_exponential", mfas.tau_start, mfas.tau_end, mfas.tau_steps)


def search_settings(mfas: MFASConfig) -> SearchSettings:
    """The progressive search's knobs from the `mfas` section."""
    return SearchSettings(
        iterations=mfas.iterations,
        first_step_samples=mfas.first_step_samples,
        samples_per_step=mfas.samples_per_step,
        temperature=TemperatureSchedule("inverse_exponential", mfas.tau_start, mfas.tau_end, mfas.tau_steps),
        surrogate=from_dict(SurrogateSettings, mfas.surrogate, "mfas.surrogate"),
        weight_sharing=mfas.weight_sharing,
    )


def _prepare(config: RunConfig) -> Path:
    """A search folder continues when its saved configuration is the same, and is refused otherwise."""
    run_dir = run_directory(config)
    changed = saved_config_changes(config)
    if changed:
        raise ConfigError(f"{run_dir} holds a search with another configuration ({', '.join(changed)})")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, dump_config(config))
    return run_dir


def backbone_model_config(config: RunConfig, modality: str) -> ModelConfig:
    """The static model a backbone is: the run's `model` over `modality` alone (`fusion: unimodal`)."""
    raw = deep_merge(to_dict(config.model), {"fusion": "unimodal", "modalities": [modality]})
    return from_dict(ModelConfig, raw, "model")


def _backbone(
    config: RunConfig, modality: str, run_dir: Path, device: torch.device
) -> tuple[Backbone, Path, dict[str, Any]]:
    """The modality's backbone: the run `mfas.backbone_runs` names, or a static unimodal run trained here."""
    given = mfas_section(config).backbone_runs.get(modality)
    if given is None:
        backbone_config = config.model_copy(
            update={
                "name": modality,
                "output_dir": str(run_dir / "backbones"),
                "model": backbone_model_config(config, modality),
                "mfas": None,
            }
        )
        folder = static_run_or_reuse(backbone_config).run_dir
    else:
        folder = Path(given)
    model_type = exported_model_type(folder)
    if model_type is not None and model_type != "static":  # without model.json, load_static names it
        raise ConfigError(
            f"mfas.backbone_runs.{modality}: {folder} holds a {model_type} model, "
            f"not a static model of {modality!r} alone"
        )
    exported = load_static(folder)
    if not isinstance(exported.model, StaticFusionModel) or exported.model.modalities != [modality]:
        raise ConfigError(
            f"mfas.backbone_runs.{modality}: {folder} holds a {exported.model_type} model over "
            f"{getattr(exported.model, 'modalities', '?')}, not a static model of {modality!r} alone"
        )
    backbone = Backbone(exported.model.to(device), mfas_section(config).candidate_layers)
    return backbone, folder, exported.extra.get("metrics", {})


def _costs(space: SearchSpace, backbones: list[Backbone], example: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {b.modality: b.prefix_madds(example[b.modality]) for b in backbones}


def architecture_madds(
    space: SearchSpace, architecture: Architecture, prefix: dict[str, list[int]], width: int, out_dim: int
) -> tuple[int, int]:
    """(total, fusion-only) MAdds per sample: each backbone up to the deepest layer the architecture reads, plus
    the fusion network, measured on one sample."""
    network = FusionNetwork(space, architecture, width, out_dim)
    one = {key: torch.zeros(1, dim) for key, dim in network.input_dims.items()}
    fusion = measure_madds(network, one).total
    backbone = sum(max(prefix[m][t] for t in taps) for m, taps in space.used_features(architecture).items() if taps)
    return backbone + fusion, fusion


@dataclasses.dataclass
class _Search:
    """What the stages after the search need: the space, the features, the data's task, how to train."""

    space: SearchSpace
    cache: FeatureCache
    task: TaskSpec
    metric: str
    training: FusionTraining
    prefix: dict[str, list[int]]

    def madds(self, architecture: Architecture) -> tuple[int, int]:
        return architecture_madds(self.space, architecture, self.prefix, self.training.width, self.task.output_dim)

    def evaluate(self, architecture: Architecture, seed: int, store: WeightStore | None) -> dict[str, Any]:
        result = train_architecture(self.space, architecture, self.cache, self.task, self.training, seed, store)
        total, fusion = self.madds(architecture)
        return {
            "score": result.metrics["valid"][self.metric],
            "valid": result.metrics["valid"],
            "train_seconds": result.train_seconds,
            "madds": total,
            "fusion_madds": fusion,
        }


def _final(search: _Search, state: SearchState, folder: Path, top_k: int, epochs: int) -> dict[str, Any]:
    """Train the search's `top_k` architectures from scratch for `epochs`; the best by validation is kept."""
    path = folder / "final.json"
    if path.is_file():
        return read_json(path, "a finished part of the search")
    ranked = sorted(state.evaluations, key=lambda e: (-e["score"], e["index"]))[:top_k]
    training = dataclasses.replace(search.training, epochs=epochs)
    trained, networks = [], []
    for entry in ranked:
        architecture = from_json(entry["architecture"])
        seed = evaluation_seed(state.seed, state.kind, entry["index"]) + 7_919
        fitted = train_architecture(
            search.space, architecture, search.cache, search.task, training, seed, None, splits=("valid", "test")
        )
        trained.append(
            {
                "index": entry["index"],
                "name": entry["name"],
                "architecture": entry["architecture"],
                "search_score": entry["score"],
                "valid": fitted.metrics["valid"],
                "test": fitted.metrics["test"],
                "madds": entry["madds"],
                "train_seconds": fitted.train_seconds,
            }
        )
        networks.append(fitted.network)
    best = max(range(len(trained)), key=lambda i: trained[i]["valid"][search.metric])
    state_dict = {k: v.detach().cpu().contiguous() for k, v in networks[best].state_dict().items()}
    atomic_write(folder / "final_best.safetensors", lambda tmp: save_file(state_dict, str(tmp)))
    result = {"trained": trained, "best": trained[best], "epochs": epochs}
    atomic_write_json(path, result)
    return result


def _timing(search: _Search, live: LiveFeatures, architectures: list[Architecture], path: Path) -> dict[str, Any]:
    """Train the same architectures (same seeds, no shared weights) on cached and on recomputed features."""
    if path.is_file():
        return read_json(path, "a finished part of the search")
    rows: list[dict[str, Any]] = []
    for i, architecture in enumerate(architectures):
        runs = {
            name: train_architecture(search.space, architecture, source, search.task, search.training, 10_000 + i)
            for name, source in (("cached", search.cache), ("live", live))
        }
        rows.append(
            {
                "name": search.space.describe(architecture),
                "cached_s": runs["cached"].train_seconds,
                "live_s": runs["live"].train_seconds,
                "cached_score": runs["cached"].metrics["valid"][search.metric],
                "live_score": runs["live"].metrics["valid"][search.metric],
            }
        )
    cached = statistics.mean(r["cached_s"] for r in rows) if rows else None
    live_s = statistics.mean(r["live_s"] for r in rows) if rows else None
    result: dict[str, Any] = {
        "device": str(search.training.device),
        "epochs": search.training.epochs,
        "architectures": rows,
        "cached_s_per_architecture": cached,
        "live_s_per_architecture": live_s,
        "speedup": live_s / cached if cached and live_s else None,
    }
    atomic_write_json(path, result)
    return result


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def _comparison(results: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """MFAS vs random search per seed and on average: best validation score found during the search, and the
    test score of the best of its top-k after full training."""
    per_seed: dict[int, dict[str, Any]] = {}
    for r in results:
        row = per_seed.setdefault(r["seed"], {"seed": r["seed"]})
        row[f"{r['kind']}_best_search_score"] = r["best"]["score"]
        row[f"{r['kind']}_final_valid"] = r["final"]["best"]["valid"][metric]
        row[f"{r['kind']}_final_test"] = r["final"]["best"]["test"][metric]
    rows = list(per_seed.values())
    summary: dict[str, Any] = {"per_seed": rows}
    for kind in ("mfas", "random"):
        for key in ("best_search_score", "final_valid", "final_test"):
            summary[f"{kind}_{key}_mean"] = _mean([row[f"{kind}_{key}"] for row in rows if f"{kind}_{key}" in row])
    if summary["random_best_search_score_mean"] is not None:
        summary["mfas_at_least_random"] = (
            summary["mfas_best_search_score_mean"] >= summary["random_best_search_score_mean"]
        )
    return summary


def _surrogate_by_step(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    steps: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        if r["kind"] == "mfas":
            for step in r["steps"]:
                steps.setdefault(step["step"], []).append(step)
    return [
        {
            "step": n,
            "position": rows[0]["position"],
            "spearman_mean": _mean([s["surrogate_spearman"] for s in rows if s["surrogate_spearman"] is not None]),
            "mae_mean": _mean([s["surrogate_mae"] for s in rows if s["surrogate_mae"] is not None]),
            "spearman_per_seed": [s["surrogate_spearman"] for s in rows],
        }
        for n, rows in sorted(steps.items())
    ]


def run_mfas_search(config: RunConfig, output: Path | None = None, progress: Progress = print) -> dict[str, Any]:
    """The whole search; every finished part (backbones, cache, search steps, finals, timing) is reused."""
    mfas = config.section("mfas")
    if not isinstance(mfas, MFASConfig):
        raise ConfigError("`dynmm search mfas` needs a config with an `mfas` section (e.g. configs/avdigits/mfas.yaml)")
    check_mfas_config(config)
    search_config = stage_data(config, mfas.search_data)
    data = data_module(config, search_config)
    info = data.info
    modalities = list(mfas.modalities) if mfas.modalities else sorted(info.modalities)
    unknown = [m for m in modalities if m not in info.modalities]
    if unknown or len(modalities) < 2 or len(set(modalities)) != len(modalities):
        raise ConfigError(
            f"mfas.modalities must name >= 2 distinct modalities of {sorted(info.modalities)}, got {modalities}"
        )
    metric = search_metric(config, info.task)
    device = search_device(mfas.device)
    run_dir = _prepare(config)

    backbones: list[Backbone] = []
    backbone_summary: dict[str, dict[str, Any]] = {}
    weight_files: list[Path] = []
    for modality in modalities:
        progress(f"backbone {modality}")
        backbone, backbone_dir, metrics = _backbone(config, modality, run_dir, device)
        backbones.append(backbone)
        weight_files.append(backbone_dir / "model.safetensors")
        backbone_summary[modality] = {
            "run": str(backbone_dir),
            "layers": list(backbone.names),
            "metrics": metrics,
            "search_test": evaluate(backbone.model, data.test_dataloader(), info.task),
        }

    progress("feature cache")
    start = time.perf_counter()
    folder: Path | None = None
    if mfas.cache == "memmap":
        described = {"data": to_dict(search_config) | {"options": dict(data.options)}}
        folder = Path(mfas.cache_dir or run_dir / "feature_cache") / cache_key(backbones, weight_files, described)
    cache = FeatureCache(backbones, data.splits, folder)
    cache_seconds = time.perf_counter() - start
    dims = cache.dims()
    space = SearchSpace(
        tuple(modalities),
        {b.modality: b.names for b in backbones},
        {b.modality: tuple(dims[f"{b.modality}.{n}"] for n in b.names) for b in backbones},
        tuple(mfas.activations),
        mfas.layers,
    )
    example = {m: data.splits["test"].inputs[m][:1] for m in modalities}
    training = FusionTraining(
        mfas.width, mfas.epochs_per_eval, mfas.lr, mfas.weight_decay, search_config.batch_size, device
    )
    search = _Search(space, cache, info.task, metric, training, _costs(space, backbones, example))
    settings = search_settings(mfas)

    results: list[dict[str, Any]] = []
    for seed in mfas.search_seeds:
        states = [run_mfas(space, search.evaluate, settings, run_dir / "searches" / f"mfas_seed{seed}", seed, progress)]
        if mfas.random_search:
            folder_r = run_dir / "searches" / f"random_seed{seed}"
            count = len(states[0].evaluations)
            states.append(
                run_random(
                    space, search.evaluate, count, mfas.samples_per_step, mfas.weight_sharing, folder_r, seed, progress
                )
            )
        for state in states:
            progress(f"{state.kind} seed {seed} · training the top {mfas.top_k} for {mfas.final_epochs} epochs")
            folder_s = run_dir / "searches" / f"{state.kind}_seed{seed}"
            final = _final(search, state, folder_s, mfas.top_k, mfas.final_epochs)
            results.append(
                {
                    "kind": state.kind,
                    "seed": seed,
                    "evaluations": state.evaluations,
                    "steps": state.steps,
                    "best": state.best(),
                    "final": final,
                }
            )

    progress("timing with and without the feature cache")
    first = next(r for r in results if r["kind"] == "mfas")
    timed = [from_json(e["architecture"]) for e in first["evaluations"][: mfas.timing_architectures]]
    timing = _timing(search, LiveFeatures(backbones, data.splits, cache.standardizers), timed, run_dir / "timing.json")
    timing |= {"cache_build_s": cache_seconds, "cache": mfas.cache, "cache_reused": cache.reused}
    timing.setdefault("device", str(device))

    best_run = max((r for r in results if r["kind"] == "mfas"), key=lambda r: r["final"]["best"]["valid"][metric])
    best = best_run["final"]["best"] | {
        "seed": best_run["seed"],
        "layers": len(best_run["final"]["best"]["architecture"]),
    }
    extra = {"name": best["name"], "valid": best["valid"], "test": best["test"], "madds": best["madds"]}
    extra |= {"backbones": {m: b["run"] for m, b in backbone_summary.items()}}
    found = _save_best(run_dir, search, backbones, best_run, best, extra)
    if mfas.finetune_epochs > 0:
        progress(f"fine-tuning the best found architecture with its backbones for {mfas.finetune_epochs} epochs")
        best["finetuned"] = _finetuned(run_dir, found, data, search, mfas, config.seed, extra)

    summary = {
        "method": "mfas",
        "data": config.data.name,
        "run_dir": str(run_dir),
        "name": config.name,
        "metric": metric,
        "modalities": modalities,
        "space": {
            "layers": {m: list(space.layer_names[m]) for m in modalities},
            "dims": {m: list(space.layer_dims[m]) for m in modalities},
            "activations": list(space.activations),
            "max_layers": space.max_layers,
            "architectures": space.size(),
            "backbone_prefix_madds": search.prefix,
        },
        "settings": to_dict(config)["mfas"],
        "backbones": backbone_summary,
        "timing": timing,
        "searches": results,
        "comparison": _comparison(results, metric),
        "surrogate": _surrogate_by_step(results),
        "best": best,
    }
    atomic_write_json(run_dir / SUMMARY, summary)
    if output is not None:
        atomic_write_json(output, summary)
    from dynmm.methods.mfas.report import write_mfas_report

    write_mfas_report(run_dir, summary)
    return summary


def _save_best(
    run_dir: Path,
    search: _Search,
    backbones: list[Backbone],
    best_run: dict[str, Any],
    best: dict[str, Any],
    extra: dict[str, Any],
) -> MFASModel:
    """best/: the best found fusion network with the standardisation it reads, loadable with `load_found`."""
    weights = run_dir / "searches" / f"mfas_seed{best_run['seed']}" / "final_best.safetensors"
    network = FusionNetwork(
        search.space, from_json(best["architecture"]), search.training.width, search.task.output_dim
    )
    network.load_state_dict(load_file(str(weights)))
    model = MFASModel(backbones, search.cache.standardizers, network.eval())
    save_found(run_dir / "best", model, search.space, best["architecture"], search.training.width, extra)
    return model


def _finetuned(
    run_dir: Path,
    found: MFASModel,
    data: MultimodalDataModule,
    search: _Search,
    mfas: MFASConfig,
    seed: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """best_finetuned/: the best found model trained end to end with its backbones unfrozen (a finished one is
    read back, not retrained), and its metrics."""
    folder = run_dir / "best_finetuned"
    if (folder / DESCRIPTION).is_file():
        return dict(read_json(folder / DESCRIPTION, "a finished part of the search")["finetuned"])
    tuned, result = finetune_found(
        found,
        data,
        search.task,
        mfas.finetune_epochs,
        mfas.lr,
        mfas.finetune_backbone_lr,
        mfas.weight_decay,
        search.training.device,
        seed,
    )
    architecture = read_json(run_dir / "best" / DESCRIPTION, "the saved best architecture")["architecture"]
    width = search.training.width
    save_found(folder, tuned, search.space, architecture, width, extra | {"finetuned": result}, with_backbones=True)
    return result
