"""fit_gate: the resource-aware gate training of modality-level DynMM on any loader of (dict, target) batches,
and dynmm_from_experts: a routed model over plain nn.Modules."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from dynmm.engine.task import task_loss
from dynmm.errors import ConfigError, InputError
from dynmm.losses import expected_cost
from dynmm.methods.modality_level import fit_gate as fit_gate_module
from dynmm.methods.modality_level.fit_gate import ExpertAdapter, dynmm_from_experts, fit_gate
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.specs import ModalitySpec, TaskSpec

SPECS = {"text": ModalitySpec("text", (6,), "vector"), "audio": ModalitySpec("audio", (10,), "vector")}
TASK = TaskSpec("classification", 3)
ROWS = 192

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's notes on tiny loaders


class TextOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(6, 3)

    def forward(self, x):
        assert set(x) == {"text"}  # the adapter hands an expert only what it reads
        return self.net(x["text"])


class Fusion(nn.Module):
    def __init__(self):
        super().__init__()
        self.text = nn.Sequential(nn.Linear(6, 32), nn.ReLU())
        self.audio = nn.Sequential(nn.Linear(10, 32), nn.ReLU())
        self.norm = nn.BatchNorm1d(64)  # batch statistics must not move while the experts are frozen
        self.head = nn.Linear(64, 3)

    def forward(self, x):
        return self.head(self.norm(torch.cat([self.text(x["text"]), self.audio(x["audio"])], dim=1)))


def build(seed=0, **kwargs):
    torch.manual_seed(seed)
    experts = [TextOnly().eval(), Fusion().eval()]
    kwargs.setdefault("expert_modalities", [["text"], ["text", "audio"]])
    kwargs.setdefault("gate_hidden", 8)
    return dynmm_from_experts(experts, SPECS, **kwargs)


def data(model, rows=ROWS, seed=1):
    """Rows whose target is the costly expert's own prediction: only that expert is right on (nearly) all."""
    g = torch.Generator().manual_seed(seed)
    inputs = {"text": torch.randn(rows, 6, generator=g), "audio": torch.randn(rows, 10, generator=g)}
    with torch.no_grad():
        target = model.experts[1].eval()(inputs).argmax(1)
    return inputs, target


def loader(inputs, target, batch_size=32, shuffle=True):
    pairs = [({m: x[i] for m, x in inputs.items()}, target[i]) for i in range(len(target))]
    return DataLoader(pairs, batch_size=batch_size, shuffle=shuffle)


def cheap_share(model, inputs):
    with torch.no_grad():
        model.eval()(inputs)
    return float((model.last_gate.choice == 0).float().mean())


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained():
    """λ = 0 and a large λ from the same experts and gate initialisation."""
    results = {}
    for weight in (0.0, 20.0):
        model = build()
        inputs, target = data(model)
        before = state(model.experts)
        gate_before = state(model.gate)
        fit_gate(model, loader(inputs, target), task=TASK, resource_weight=weight, max_epochs=6, lr=0.05)
        results[weight] = (model, inputs, before, gate_before)
    return results


def test_a_large_resource_weight_routes_nearly_every_row_to_the_cheap_expert(trained):
    model, inputs, _, _ = trained[20.0]
    assert cheap_share(model, inputs) > 0.95


def test_without_resource_weight_rows_go_to_the_only_expert_that_is_right(trained):
    model, inputs, _, _ = trained[0.0]
    assert cheap_share(model, inputs) < 0.2


def test_frozen_experts_are_unchanged_and_only_the_gate_learns(trained):
    for model, _, experts_before, gate_before in trained.values():
        assert same(experts_before, state(model.experts))  # weights and batch-norm statistics
        assert not same(gate_before, state(model.gate))
        assert not model.training and model.mode == "dispatch"
        assert all(p.requires_grad for p in model.parameters())  # freezing was undone


def test_fine_tuning_trains_the_experts_too():
    model = build()
    inputs, target = data(model)
    before = state(model.experts)
    fit_gate(model, loader(inputs, target), task=TASK, max_epochs=1, finetune_epochs=1, lr=0.01)
    assert not same(before, state(model.experts))


def test_the_same_seed_gives_the_same_gate():
    gates = []
    for _ in range(2):
        model = build()
        inputs, target = data(model)
        fit_gate(model, loader(inputs, target), task=TASK, resource_weight=0.5, max_epochs=2, lr=0.05, seed=3)
        gates.append(state(model.gate))
    assert same(*gates)


def test_the_best_validation_epoch_is_kept(monkeypatch):
    """With a validation loader the returned gate is the one of the epoch with the lowest task loss + λ·cost."""
    seen = []
    original = fit_gate_module._KeepBest.on_validation_end

    def record(self, trainer, pl_module):
        seen.append(float(trainer.callback_metrics["val/objective"]))
        original(self, trainer, pl_module)

    monkeypatch.setattr(fit_gate_module._KeepBest, "on_validation_end", record)
    model = build()
    inputs, target = data(model)
    val_inputs, val_target = data(model, rows=64, seed=5)
    val = loader(val_inputs, val_target, batch_size=64, shuffle=False)
    fit_gate(model, loader(inputs, target), val, task=TASK, resource_weight=0.1, max_epochs=4, lr=0.05)
    with torch.no_grad():
        out = model(val_inputs)
    kept = task_loss(TASK, out, val_target) + 0.1 * expected_cost(model.last_gate.weights, model.costs)
    assert len(seen) == 4
    assert float(kept) == pytest.approx(min(seen), abs=1e-5)


def test_no_file_is_written_unless_a_folder_is_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = build()
    inputs, target = data(model, rows=64)
    fit_gate(model, loader(inputs, target), loader(inputs, target), task=TASK, max_epochs=1, finetune_epochs=1)
    assert list(tmp_path.iterdir()) == []
    folder = tmp_path / "fits"
    fit_gate(model, loader(inputs, target), loader(inputs, target), task=TASK, max_epochs=1, checkpoint_dir=folder)
    assert (folder / "gate" / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fits"]


class Stream(IterableDataset):
    """A loader without a length: batches made on the fly."""

    def __init__(self, inputs, target):
        self.inputs, self.target = inputs, target

    def __iter__(self):
        for start in range(0, len(self.target), 16):
            yield {m: x[start : start + 16] for m, x in self.inputs.items()}, self.target[start : start + 16]


def test_any_iterable_loader_of_dict_target_batches_works():
    model = build()
    inputs, target = data(model, rows=64)
    fit_gate(model, DataLoader(Stream(inputs, target), batch_size=None), task=TASK, max_epochs=1)
    with pytest.raises(ConfigError, match="train_loader yielded no batch"):
        fit_gate(model, DataLoader(Stream(inputs, target[:0]), batch_size=None), task=TASK, max_epochs=1)


def test_a_loader_of_other_batches_is_an_input_error():
    model = build()
    inputs, target = data(model, rows=32)
    tensors = DataLoader(list(zip(inputs["text"], target, strict=True)), batch_size=16)
    with pytest.raises(InputError, match=r"train_loader must yield \(dict\[str, Tensor\], target Tensor\)"):
        fit_gate(model, tensors, task=TASK, max_epochs=1)


def _good():
    model = build()
    inputs, target = data(model, rows=32)
    return model, loader(inputs, target)


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        ({"resource_weight": -0.1}, "resource_weight"),
        ({"resource_weight": float("nan")}, "resource_weight"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"max_epochs": 2.0}, "max_epochs"),
        ({"finetune_epochs": -1}, "finetune_epochs"),
        ({"lr": 0.0}, "lr"),
        ({"finetune_lr": -1.0}, "finetune_lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"task": "classification"}, "task"),
        ({"train_loader": DataLoader([])}, "train_loader is empty"),
        ({"train_loader": None}, "train_loader is required"),
        ({"val_loader": DataLoader([])}, "val_loader is empty"),
        ({"model": nn.Linear(2, 2)}, "model must be a ModalityLevelDynMM"),
    ],
)
def test_bad_arguments_are_config_errors_that_name_the_argument(change, argument):
    model, train = _good()
    kwargs = {"model": model, "train_loader": train, "task": TASK, **change}
    with pytest.raises(ConfigError, match=argument):
        fit_gate(**kwargs)


class _MapDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"text": torch.zeros(6)}, torch.tensor(0)


def test_a_dataset_instead_of_a_loader_is_refused():
    model, _ = _good()
    with pytest.raises(ConfigError, match="not the Dataset itself"):
        fit_gate(model, _MapDataset(), task=TASK)


def test_experts_without_specs_are_adapted_and_batches_checked_for_what_they_read():
    model = build(gate_modalities=["text"])
    assert isinstance(model, ModalityLevelDynMM)
    assert all(isinstance(e, ExpertAdapter) for e in model.experts)
    assert model.gate.modalities == ["text"]
    assert sorted(model.specs) == ["audio", "text"]  # the gate looks at text, yet audio is checked too
    assert model.expert_madds == [6 * 3, 6 * 32 + 10 * 32 + 64 * 3]
    with pytest.raises(InputError, match="missing modality 'audio'"):
        model({"text": torch.zeros(4, 6)})
    model.beta = 0.0
    with torch.no_grad():  # dispatch: TextOnly asserts it only ever receives the text
        model.eval()({"text": torch.randn(8, 6), "audio": torch.randn(8, 10)})


def test_dynmm_from_experts_refuses_what_it_cannot_route():
    with pytest.raises(ConfigError, match="at least 2 experts"):
        dynmm_from_experts([TextOnly()], SPECS)
    with pytest.raises(ConfigError, match=r"expert_modalities\[1\]"):
        dynmm_from_experts([TextOnly(), Fusion()], SPECS, expert_modalities=[["text"], ["video"]])
    with pytest.raises(ConfigError, match="gate_modalities"):
        dynmm_from_experts(
            [TextOnly(), Fusion()], SPECS, expert_modalities=[["text"], ["text", "audio"]], gate_modalities=["x"]
        )
