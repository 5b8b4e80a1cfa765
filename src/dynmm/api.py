"""The public Python API: everything a user composes, in one place, with no YAML needed.

`import dynmm` exposes the same names lazily (`dynmm.fit_gate`, `dynmm.route`, ...): this module, which imports
torch and Lightning, is only loaded when one of them is first used. See the README section "Python API".

- Routing core: `route` runs a per-row choice in one of `MODES` ("dense" training, "masked" reference,
  "dispatch": each branch on its own rows only); `take_rows` gathers rows of an input dict.
- Costs: `measure_madds` (one sample, eval mode), `counting_madds` (any block of code), `count_madds`,
  `count_parameters`; MAdds are counted by running the real forward, never typed in.
- Gates: `MLPGate`, `TransformerGate` (or subclass `Gate`), returning `GateOutput(choice, weights, logits)`;
  `build_gate` from a `GateConfig`. Relaxations: `gumbel_softmax`, `sample_gumbel`, `TemperatureSchedule`.
- Modality-level DynMM: `dynmm_from_experts` (your own nn.Module experts) or `ModalityLevelDynMM`, trained with
  `fit_gate` (resource-aware loss, any DataLoader of (dict, target)) or `DynMMGateModule` in your own Trainer.
- The other methods' models: `FusionLevelDynMM`, `AdaMML` + `AdaMMLPolicy`; the MFAS search `run_mfas_search`
  (driven by a run config); static fusion models `StaticFusionModel` / `build_static_model` (from a `ModelConfig`).

- Runs as the command line makes them: `load_config` (YAML + overrides), `train_run`, `run_sweep`, and
  `load_exported` (any method's exported run, rebuilt without pickle).

Configs (`GateConfig`, `ModelConfig`) are built with keyword arguments, e.g. `GateConfig(kind="mlp", hidden=32)`.
Models save and load with `safetensors.torch.save_model` / `load_model`.
"""

from __future__ import annotations

from dynmm.config import GateConfig, ModelConfig, load_config
from dynmm.cost import MAddsReport, count_madds, count_parameters, counting_madds, measure_madds
from dynmm.errors import ConfigError, DataError, DynmmError, InputError
from dynmm.losses import expected_cost, normalised_costs
from dynmm.methods.adamml.model import AdaMML
from dynmm.methods.adamml.policy import AdaMMLPolicy
from dynmm.methods.fusion_level.model import FusionLevelDynMM
from dynmm.methods.mfas.recipe import run_mfas_search
from dynmm.methods.modality_level.fit_gate import ExpertAdapter, dynmm_from_experts, fit_gate
from dynmm.methods.modality_level.model import ModalityLevelDynMM, build_modality_level
from dynmm.methods.modality_level.module import DynMMGateModule
from dynmm.methods.registry import load_exported, run_sweep, train_run
from dynmm.nn.gates import Gate, GateOutput, MLPGate, TransformerGate, build_gate
from dynmm.nn.static_model import StaticFusionModel, build_static_model
from dynmm.relax import TemperatureSchedule, gumbel_softmax, sample_gumbel
from dynmm.routing import MODES, Mode, route, take_rows
from dynmm.specs import Batch, Inputs, ModalitySpec, TaskSpec, example_inputs

__all__ = [
    # data description
    "ModalitySpec",
    "TaskSpec",
    "Inputs",
    "Batch",
    "example_inputs",
    # routing core
    "route",
    "MODES",
    "Mode",
    "take_rows",
    # measured cost
    "measure_madds",
    "counting_madds",
    "count_madds",
    "count_parameters",
    "MAddsReport",
    # gates and relaxations
    "Gate",
    "MLPGate",
    "TransformerGate",
    "GateOutput",
    "GateConfig",
    "build_gate",
    "gumbel_softmax",
    "sample_gumbel",
    "TemperatureSchedule",
    # resource-aware loss
    "expected_cost",
    "normalised_costs",
    # static fusion
    "StaticFusionModel",
    "ModelConfig",
    "build_static_model",
    # modality-level DynMM
    "ModalityLevelDynMM",
    "build_modality_level",
    "dynmm_from_experts",
    "ExpertAdapter",
    "fit_gate",
    "DynMMGateModule",
    # other methods
    "FusionLevelDynMM",
    "AdaMML",
    "AdaMMLPolicy",
    "run_mfas_search",
    # runs as the command line makes them
    "load_config",
    "train_run",
    "run_sweep",
    "load_exported",
    # errors
    "DynmmError",
    "ConfigError",
    "InputError",
    "DataError",
]
