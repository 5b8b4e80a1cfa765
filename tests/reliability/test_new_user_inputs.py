"""Defects a new user hits first: targets of the wrong shape, dtype or values (a regression target (batch, 1) used
to train a silently broadcast (batch, batch) loss), a refused start that left its run folder behind, run names
that escape the output folder, inputs on the meta device, NaN rows that were not named, and a DynMM gate
evaluated with another split's z-score statistics than its experts were trained with.

Every refusal is an InputError / ConfigError; from the CLI one `error:` line, exit status 2, nothing written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from tests.reliability.test_cli_runs import cli
from torch import nn

from dynmm.config import RunConfig, from_dict, load_config
from dynmm.data.mosi import load_mosi
from dynmm.engine.module import SupervisedModule
from dynmm.engine.task import task_loss
from dynmm.errors import ConfigError, InputError
from dynmm.methods.registry import load_exported, train_run
from dynmm.nn.static_model import build_static_model
from dynmm.report.evaluate import evaluate
from dynmm.specs import SEGMENTATION_IGNORE, ModalitySpec, TaskSpec
from dynmm.validation import check_inputs, check_target

STATIC = "configs/mosi/static.yaml"
DYNMM = "configs/mosi/dynmm.yaml"
TINY = ["--train.max_epochs=1", "--train.progress_bar=false"]
TINY_DYNMM = [*TINY, "--dynmm.gate_train.max_epochs=1"]

REGRESSION = TaskSpec("regression")
CLASSES = TaskSpec("classification", 3)
PIXELS = TaskSpec("segmentation", 3)
LABELS = TaskSpec("multilabel", 3)


def refused(capsys, monkeypatch, args: list[str], *messages: str) -> str:
    code, out = cli(capsys, monkeypatch, *args)
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 2, out
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    for message in messages:
        assert message in lines[0], out
    return lines[0]


def files_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


# --- 1 and 2: the target is checked against the task before the loss ---------------------------------------


def test_a_regression_target_of_shape_batch_by_1_is_refused_not_broadcast():
    outputs, target = torch.randn(32, 1), torch.randn(32, 1)
    with pytest.raises(InputError) as caught:
        task_loss(REGRESSION, outputs, target)
    message = str(caught.value)
    assert message.startswith("target: expected shape (batch,) = (32,)")
    assert "regression task, got (32, 1)" in message and "squeeze(1)" in message


SHAPES = {
    "classification (B, 1)": (CLASSES, torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long), "got (4, 1)"),
    "segmentation (B, 1, H, W)": (
        PIXELS,
        torch.randn(4, 3, 6, 8),
        torch.zeros(4, 1, 6, 8, dtype=torch.long),
        "expected shape (batch, height, width) = (4, 6, 8) of integer class ids per pixel for a segmentation task, "
        "got (4, 1, 6, 8)",
    ),
    "segmentation of another size": (
        PIXELS,
        torch.randn(4, 3, 6, 8),
        torch.zeros(4, 6, 6, dtype=torch.long),
        "= (4, 6, 8)",
    ),
    "multilabel (B, 1, C)": (
        LABELS,
        torch.randn(4, 3),
        torch.zeros(4, 1, 3),
        "expected shape (batch, num_classes) = (4, 3) of 0/1 per label for a multilabel task, got (4, 1, 3)",
    ),
    "classification rows differ": (
        CLASSES,
        torch.randn(4, 3),
        torch.zeros(3, dtype=torch.long),
        "got (3,): the inputs have 4 rows, the target 3",
    ),
    "regression rows differ": (REGRESSION, torch.randn(4, 1), torch.zeros(5), "the inputs have 4 rows, the target 5"),
    "a scalar target": (REGRESSION, torch.randn(4, 1), torch.tensor(1.0), "got ()"),
}


@pytest.mark.parametrize("case", list(SHAPES), ids=list(SHAPES))
def test_a_target_of_the_wrong_shape_names_expected_and_found_shape(case):
    task, outputs, target, message = SHAPES[case]
    with pytest.raises(InputError, match=r"^target: ") as caught:
        task_loss(task, outputs, target)
    assert message in str(caught.value)


VALUES = {
    "float class ids": (
        CLASSES,
        torch.randn(4, 3),
        torch.zeros(4),
        "expected integer class ids (e.g. torch.int64) for a classification task, got dtype torch.float32",
    ),
    "integer scores": (REGRESSION, torch.randn(4, 1), torch.zeros(4, dtype=torch.long), "convert it with .float()"),
    "a class id out of range": (
        CLASSES,
        torch.randn(4, 3),
        torch.tensor([0, 3, 1, -1]),
        "class ids must lie in [0, 3) for a classification task with 3 classes; 2 sample(s) (rows 1, 3 of 4)",
    ),
    "a pixel class out of range": (
        PIXELS,
        torch.randn(2, 3, 4, 4),
        torch.zeros(2, 4, 4, dtype=torch.long).index_put_((torch.tensor([1]),), torch.tensor(7)),
        f"[0, 3) or {SEGMENTATION_IGNORE} (unlabeled)",
    ),
    "a multilabel 2": (
        LABELS,
        torch.randn(4, 3),
        torch.tensor([[0, 1, 0], [0, 0, 2], [1, 1, 1], [0, 0, 0]]),
        "expected 0 or 1 per label for a multilabel task; 1 sample(s) (row 1 of 4) hold other values",
    ),
    "NaN scores": (
        REGRESSION,
        torch.randn(8, 1),
        torch.tensor([0.0, float("nan"), 0.0, float("inf"), 0, 0, 0, 0]),
        "target: contains NaN or inf values in 2 sample(s) (rows 1, 3 of 8)",
    ),
}


@pytest.mark.parametrize("case", list(VALUES), ids=list(VALUES))
def test_a_target_of_the_wrong_dtype_or_values_is_named(case):
    task, outputs, target, message = VALUES[case]
    with pytest.raises(InputError) as caught:
        task_loss(task, outputs, target)
    assert message in str(caught.value)


def test_well_formed_targets_pass():
    check_target(torch.randn(4), REGRESSION, 4)
    check_target(torch.tensor([0, 2, 1, 0]), CLASSES, 4)
    check_target(torch.tensor([0, 2, 1, 0], dtype=torch.int32), CLASSES, 4)
    pixels = torch.tensor([0, 1, 2, SEGMENTATION_IGNORE]).repeat(2, 4, 1)
    check_target(pixels, PIXELS, 2, spatial=(4, 4))
    for labels in (torch.tensor([[0, 1, 1]]), torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[True, False, True]])):
        check_target(labels, LABELS, 1)
    assert float(task_loss(PIXELS, torch.randn(2, 3, 4, 4), pixels)) > 0


SPECS = {"text": ModalitySpec("text", (5,), "vector"), "audio": ModalitySpec("audio", (4,), "vector")}


def static_model(task: TaskSpec) -> nn.Module:
    config = load_config(STATIC, ["--model.embed_dim=4"]).model
    torch.manual_seed(0)
    return build_static_model(config, SPECS, task)


def batch(rows: int = 6) -> dict[str, torch.Tensor]:
    return {"text": torch.randn(rows, 5), "audio": torch.randn(rows, 4)}


def test_every_training_and_evaluation_path_checks_the_target():
    """The supervised module (train and validation steps), `evaluate` and `fit_gate`."""
    module = SupervisedModule(static_model(REGRESSION), REGRESSION)
    wrong = (batch(), torch.randn(6, 1))
    with pytest.raises(InputError, match=r"regression task, got \(6, 1\)"):
        module.training_step(wrong, 0)
    with pytest.raises(InputError, match=r"regression task, got \(6, 1\)"):
        module.validation_step(wrong, 0)
    with pytest.raises(InputError, match=r"regression task, got \(6, 1\)"):
        evaluate(static_model(REGRESSION), [wrong], REGRESSION)
    with pytest.raises(InputError, match=r"the inputs have 6 rows, the target 5"):
        evaluate(static_model(CLASSES), [(batch(), torch.zeros(5, dtype=torch.long))], CLASSES)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fit_gate_checks_the_target_of_your_own_loader():
    from torch.utils.data import DataLoader, TensorDataset

    from dynmm.methods.modality_level.fit_gate import dynmm_from_experts, fit_gate

    experts = [static_model(CLASSES), static_model(CLASSES)]
    model = dynmm_from_experts(experts, SPECS, gate_hidden=4)
    inputs = batch(16)
    rows = TensorDataset(inputs["text"], inputs["audio"], torch.zeros(16, 1, dtype=torch.long))
    loader = DataLoader(rows, batch_size=8, collate_fn=lambda b: _as_pairs(b))
    with pytest.raises(InputError, match=r"classification task, got \(8, 1\)"):
        fit_gate(model, loader, task=CLASSES, max_epochs=1)


def _as_pairs(rows):
    text, audio, target = (torch.stack(column) for column in zip(*rows, strict=True))
    return {"text": text, "audio": audio}, target


def test_adamml_and_fusion_level_modules_check_the_target():
    from tests.methods.adamml.test_model import build as build_adamml
    from tests.methods.adamml.test_model import clips
    from tests.methods.fusion_level.test_model import batch as rgbd
    from tests.methods.fusion_level.test_model import build as build_fusion

    from dynmm.methods.adamml.module import AdaMMLModule
    from dynmm.methods.fusion_level.module import FusionLevelModule

    adamml = build_adamml()
    task = TaskSpec("classification", 5)
    for phase in ("joint", "warmup"):
        module = AdaMMLModule(adamml, task, phase, {m: 0.1 for m in adamml.modalities})
        with pytest.raises(InputError, match=r"classification task, got \(4, 1\)"):
            module.training_step((clips(4), torch.zeros(4, 1, dtype=torch.long)), 0)
    with pytest.raises(InputError, match=r"the inputs have 4 rows, the target 3"):
        module.validation_step((clips(4), torch.zeros(3, dtype=torch.long)), 0)

    fusion = build_fusion()
    module = FusionLevelModule(fusion, TaskSpec("segmentation", 5), "supernet")
    with pytest.raises(InputError, match=r"= \(2, 32, 48\) .* got \(2, 1, 32, 48\)"):
        module.training_step((rgbd(2), torch.zeros(2, 1, 32, 48, dtype=torch.long)), 0)
    with pytest.raises(InputError, match=r"the inputs have 2 rows, the target 3"):
        module.training_step((rgbd(2), torch.zeros(3, 32, 48, dtype=torch.long)), 0)


# --- 5 and 6: meta device, NaN rows named ---------------------------------------------------------------------


def test_an_input_on_the_meta_device_is_named():
    inputs = batch() | {"audio": torch.empty(6, 4, device="meta")}
    with pytest.raises(InputError, match=r"model: modality 'audio' is on the 'meta' device"):
        check_inputs(inputs, SPECS)
    with pytest.raises(InputError, match=r"modality 'audio' is on the 'meta' device"):
        static_model(REGRESSION)(inputs)
    with pytest.raises(InputError, match=r"target: is on the 'meta' device"):
        check_target(torch.empty(6, device="meta"), REGRESSION, 6)


def test_nan_rows_are_named_per_modality():
    inputs = batch(10)
    inputs["text"][[2, 7], 0] = float("nan")
    inputs["audio"][list(range(3, 10)), 1] = float("inf")
    with pytest.raises(InputError) as caught:
        check_inputs(inputs, SPECS)
    message = str(caught.value)
    assert "modality 'text' contains NaN or inf values in 2 sample(s) (rows 2, 7 of 10)" in message
    assert "modality 'audio' contains NaN or inf values in 7 sample(s) (rows 3, 4, 5, 6, 7, ... of 10)" in message
    one = batch(4)
    one["audio"][1, 0] = float("nan")
    with pytest.raises(InputError, match=r"in 1 sample\(s\) \(row 1 of 4\)"):
        check_inputs(one, SPECS)


# --- 4: run names stay below the output folder ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../../x", "name '../../x' leaves output_dir"),
        ("exp/../../x", "leaves output_dir"),
        ("ABSOLUTE", "is an absolute path"),
        ("", "name must name a folder below output_dir"),
        (".", "name must name a folder below output_dir"),
    ],
)
def test_a_run_name_outside_the_output_folder_is_refused(tmp_path, capsys, monkeypatch, name, message):
    output = tmp_path / "a" / "b" / "runs"
    name = str(tmp_path / "abs") if name == "ABSOLUTE" else name
    with pytest.raises(ConfigError, match=message):
        load_config(STATIC, [f"--name={name}"])
    refused(capsys, monkeypatch, ["train", STATIC, f"--output_dir={output}", f"--name={name}", *TINY], message)
    assert files_under(tmp_path) == [], files_under(tmp_path)


def test_a_run_name_with_nul_is_refused_and_subfolders_are_fine():
    with pytest.raises(ConfigError, match="name must not contain a NUL character"):
        from_dict(RunConfig, {"name": "a\x00b"})
    assert load_config(STATIC, ["--name=exp/a"]).name == "exp/a"


def test_a_dynmm_expert_name_outside_the_experts_folder_is_refused(tmp_path, capsys, monkeypatch):
    experts = "--dynmm.experts=[{name: ../x, model: {fusion: unimodal, modalities: [text]}}, {name: y}]"
    args = ["train", DYNMM, f"--output_dir={tmp_path / 'runs'}", "--name=d", experts, *TINY_DYNMM]
    refused(capsys, monkeypatch, args, "dynmm.experts[0].name '../x' leaves output_dir")
    assert files_under(tmp_path) == []


# --- 3: a refused start writes nothing; the corrected command then runs ----------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("--data.batch_size=-4", "batch_size must be >= 1, got -4"),
        ("--data.options.split_column=nope", "MOSI split_column 'nope' is unknown"),
        ("--model.fusion=nope", "unknown fusion 'nope'"),
        ("--train.lr=-1", "train.lr must be >= 0"),
        ("--train.accelerator=nope", "accelerator='nope'"),
        ("--train.strategy=nope", "strategy='nope'"),
    ],
)
def test_a_refused_static_start_leaves_no_folder(tmp_path, capsys, monkeypatch, bad, message):
    output = tmp_path / "runs"
    refused(capsys, monkeypatch, ["train", STATIC, f"--output_dir={output}", "--name=s", *TINY, bad], message)
    assert files_under(tmp_path) == []


def test_after_a_refused_static_start_the_corrected_command_runs_in_a_subfolder_name(tmp_path, capsys, monkeypatch):
    args = ["train", STATIC, f"--output_dir={tmp_path / 'runs'}", "--name=exp/a", *TINY]
    refused(capsys, monkeypatch, [*args, "--data.batch_size=-4"], "batch_size must be >= 1")
    assert files_under(tmp_path) == []
    code, out = cli(capsys, monkeypatch, *args)
    assert code == 0, out
    assert (tmp_path / "runs" / "exp" / "a" / "metrics.json").is_file()
    code, out = cli(capsys, monkeypatch, *args, "--train.max_epochs=2", "--resume")
    assert code == 0, out


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("--data.batch_size=-4", "batch_size must be >= 1, got -4"),
        ("--dynmm.gate.modalities=[nope]", "dynmm.gate.modalities: unknown modality ['nope']"),
        ("--dynmm.eval_data={options: {split_column: nope}}", "MOSI split_column 'nope' is unknown"),
        ("--dynmm.experts=[{name: a, model: {fusion: nope}}, {name: b}]", "unknown fusion 'nope'"),
        ("--dynmm.gate_train.lr=-1", "dynmm.gate_train.lr must be >= 0"),
    ],
)
def test_a_refused_dynmm_start_leaves_no_folder(tmp_path, capsys, monkeypatch, bad, message):
    args = ["train", DYNMM, f"--output_dir={tmp_path / 'runs'}", "--name=d", *TINY_DYNMM, bad]
    refused(capsys, monkeypatch, args, message)
    assert files_under(tmp_path) == []


def test_after_a_refused_dynmm_start_the_corrected_command_runs(tmp_path, capsys, monkeypatch):
    args = ["train", DYNMM, f"--output_dir={tmp_path / 'runs'}", "--name=d", *TINY_DYNMM]
    refused(capsys, monkeypatch, [*args, "--data.batch_size=-4"], "batch_size must be >= 1")
    assert files_under(tmp_path) == []
    code, out = cli(capsys, monkeypatch, *args)
    assert code == 0, out
    assert (tmp_path / "runs" / "d" / "metrics.json").is_file()


# --- 7: the gate and the evaluation see inputs scaled like the experts' ------------------------------------------


def mosi_dynmm_config(tmp_path: Path, gate_options: dict, eval_options: dict | None = None) -> Path:
    config = yaml.safe_load(Path(DYNMM).read_text())
    config["dynmm"]["gate_data"] = {"options": gate_options}
    if eval_options is None:
        config["dynmm"].pop("eval_data")
    else:
        config["dynmm"]["eval_data"] = {"options": eval_options}
    path = tmp_path / "dynmm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_changing_only_split_column_keeps_the_experts_statistics(tmp_path):
    """Experts trained on `split` (z-scored with `split` train rows); gate and evaluation on `split_heldout`
    rows, with no statistics column named: they are z-scored with `split` train rows too."""
    path = mosi_dynmm_config(tmp_path, {"split_column": "split_heldout"})
    config = load_config(path, [f"--output_dir={tmp_path / 'runs'}", "--name=d", *TINY_DYNMM])
    result = train_run(config)
    exported = load_exported(result.run_dir)
    options = exported.data_config.options
    assert options == {"split_column": "split_heldout", "stats_split_column": "split"}
    expected = load_mosi("split_heldout", stats_split_column="split")["test"]
    other = load_mosi("split_heldout")["test"]
    assert not torch.equal(expected.inputs["audio"], other.inputs["audio"])  # the statistics do differ
    recomputed = evaluate(exported.model, [(expected.inputs, expected.target)], exported.task)
    assert recomputed["mae"] == pytest.approx(result.metrics["test"]["mae"], abs=1e-5)


def test_a_statistics_column_that_contradicts_the_experts_is_refused(tmp_path, capsys, monkeypatch):
    path = mosi_dynmm_config(tmp_path, {"split_column": "split_heldout", "stats_split_column": "split"})
    bad = "--dynmm.eval_data={options: {split_column: split_heldout, stats_split_column: split_heldout}}"
    args = ["train", str(path), f"--output_dir={tmp_path / 'runs'}", "--name=d", *TINY_DYNMM, bad]
    line = refused(capsys, monkeypatch, args, "dynmm.eval_data.options.stats_split_column is 'split_heldout'")
    assert "z-scored with the train rows of 'split'" in line
    assert not (tmp_path / "runs").exists()
