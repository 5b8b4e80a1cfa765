"""The CLI and run directories under bad input: `dynmm train / eval / report / sweep / search mfas / data check /
bench ...` exit 2 with one `error:` line (never a traceback), and a failing command leaves an existing run's
files byte-identical. Two tiny MOSI runs (static, DynMM; one epoch per stage) are trained once for the module."""

from __future__ import annotations

import builtins
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dynmm.cli import main
from dynmm.config import load_config
from dynmm.methods.registry import train_run

ENTRY = "from dynmm.cli import main; main()"
FAST = ["--train.max_epochs=1", "--train.progress_bar=false"]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run (logs aside: a restarted fit may add a log version), by relative path."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and "logs" not in p.relative_to(run_dir).parts
    }


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """`dynmm ARGS` in this process through the real entry point (`main`): (exit code, output)."""
    monkeypatch.setattr(sys, "argv", ["dynmm", *args])
    code = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out = capsys.readouterr()
    return code, out.out + out.err


def refused(capsys, monkeypatch, args: list[str], message: str, run_dir: Path | None = None) -> str:
    """Exit code 2, one `error:` line containing `message`, and `run_dir` untouched."""
    before = snapshot(run_dir) if run_dir is not None else None
    code, out = cli(capsys, monkeypatch, *args)
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 2, out
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert message in lines[0], out
    if run_dir is not None:
        assert snapshot(run_dir) == before
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    train_run(load_config("configs/mosi/static.yaml", [f"--output_dir={root}", "--name=static", *FAST]))
    dynmm = ["--name=dynmm", "--dynmm.gate_train.max_epochs=1", f"--output_dir={root}", *FAST]
    train_run(load_config("configs/mosi/dynmm.yaml", dynmm))
    return root


def copy_run(runs: Path, name: str, new: str) -> Path:
    """A copy of a finished run under another name in the same output folder (so that it can be resumed)."""
    target = runs / new
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(runs / name, target)
    config = target / "config.yaml"
    config.write_text(config.read_text().replace(f"name: {name}\n", f"name: {new}\n", 1))
    return target


# ----------------------------------------------------------------------------- through a real subprocess


def test_the_installed_entry_point_prints_one_line_not_a_traceback(runs, tmp_path):
    """A few cases through `python -c 'main()'` in subprocesses (run side by side); the rest run in-process."""
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [\ntrain: {max_epochs: 1}\n")
    broken = copy_run(runs, "static", "sub_broken")
    (broken / "model.json").write_text("[]")
    report = copy_run(runs, "dynmm", "sub_report")
    (report / "metrics.json").write_text('{"valid": ')
    cases = {
        "train": (["train", str(bad_yaml)], "is not valid YAML: expected ',' or ']', but got '<stream end>' at line 3"),
        "eval": (["eval", str(broken)], "model.json must hold a JSON object"),
        "report": (["report", str(report)], "metrics.json is not valid JSON"),
    }
    before = {name: snapshot(path) for name, path in (("eval", broken), ("report", report))}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", ENTRY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, (args, _) in cases.items()
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        lines = [line for line in (out + err).splitlines() if line.strip()]
        assert proc.returncode == 2, (name, out, err)
        assert "Traceback" not in out + err and len(lines) == 1, (name, out, err)
        assert lines[0].startswith("error: ") and cases[name][1] in lines[0], (name, lines)
    assert snapshot(broken) == before["eval"] and snapshot(report) == before["report"]


# ----------------------------------------------------------------------------- dynmm train


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [\n", "is not valid YAML: expected the node content, but found '<stream end>' at line 2, column 1"),
        ("train:\n  max_epochs: 3\n   lr: 2\n", "is not valid YAML: mapping values are not allowed here at line 3"),
        ("- a list\n", "must hold a mapping at the top level, got list"),
        ("train:\n  max_epochs: three\n", "config key 'train.max_epochs' expects int, got 'three'"),
        ("train:\n  lr: [1]\n", "config key 'train.lr' expects float, got [1]"),
        ("train:\n  deterministic: 1\n", "config key 'train.deterministic' expects bool, got 1"),
        ("data: mosi\n", "config section 'data' must be a mapping, got str"),
        ("model:\n  encoders: [mlp]\n", "config key 'model.encoders' expects a mapping"),
        ("train:\n  max_epoch: 3\n", "unknown config key 'train.max_epoch' (did you mean 'max_epochs'?)"),
    ],
)
def test_train_refuses_a_bad_yaml_config(capsys, monkeypatch, tmp_path, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    refused(capsys, monkeypatch, ["train", str(config), f"--output_dir={tmp_path}", "--name=x"], message)
    assert not (tmp_path / "x").exists()


def test_train_refuses_a_config_that_is_not_text(capsys, monkeypatch, tmp_path):
    """Fixed: a binary file used to end in a UnicodeDecodeError traceback."""
    config = tmp_path / "binary.yaml"
    config.write_bytes(b"\xff\xfe\x00\x01 binary")
    refused(capsys, monkeypatch, ["train", str(config)], "is not UTF-8 text")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--train.max_epochs=[", "override '--train.max_epochs=[': the value is not valid YAML"),
        ("--train.max_epochs=a: b: c", "the value is not valid YAML (mapping values are not allowed here"),
        ("--train.max_epochs=1.5", "config key 'train.max_epochs' expects int, got 1.5"),
        ("--train.max_epochs", "has no value; write --train.max_epochs=VALUE"),
        ("max_epochs=3", "must look like --section.key=value"),
        ("--data.options.bogus=1", "unknown option(s) ['bogus'] for data set 'mosi'"),
        ("--data.name=nope", "unknown data set 'nope'"),
        ("--data.batch_size=0", "batch_size must be >= 1, got 0"),
        ("--train.max_epochs=-1", "train.max_epochs must be >= 0, got -1"),
    ],
)
def test_train_refuses_bad_overrides(capsys, monkeypatch, tmp_path, override, message):
    """Fixed: a value that is not YAML used to print PyYAML's multi-line error."""
    refused(
        capsys,
        monkeypatch,
        ["train", "configs/mosi/static.yaml", f"--output_dir={tmp_path}", "--name=x", override],
        message,
    )


def test_train_into_an_existing_run_leaves_it_byte_identical(capsys, monkeypatch, runs):
    args = ["train", "configs/mosi/static.yaml", f"--output_dir={runs}", "--name=static", *FAST]
    refused(capsys, monkeypatch, args, "already exists; continue it with --resume", runs / "static")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [\n", "config.yaml is not valid YAML"),
        ("", "--resume with a different configuration"),
        ("- 1\n", "must hold a mapping at the top level, got list"),
        ("train: {max_epochs: one}\n", "config key 'train.max_epochs' expects int, got 'one'"),
    ],
)
def test_resume_with_a_corrupt_run_config_leaves_the_run_byte_identical(capsys, monkeypatch, runs, text, message):
    run = copy_run(runs, "static", "corrupt_config")
    (run / "config.yaml").write_text(text)
    args = ["train", "configs/mosi/static.yaml", f"--output_dir={runs}", "--name=corrupt_config", "--resume", *FAST]
    refused(capsys, monkeypatch, args, message, run)


def test_resume_with_a_changed_config_or_nothing_to_resume(capsys, monkeypatch, runs, tmp_path):
    run = copy_run(runs, "static", "changed")
    args = ["train", "configs/mosi/static.yaml", f"--output_dir={runs}", "--name=changed", "--resume", *FAST]
    refused(capsys, monkeypatch, [*args, "--train.lr=0.5"], "--resume with a different configuration (train.lr)", run)
    empty = ["train", "configs/mosi/static.yaml", f"--output_dir={tmp_path}", "--name=none", "--resume", *FAST]
    refused(capsys, monkeypatch, empty, "nothing to resume")


class Payload:
    """Unpickling this runs code: it would create `MARKER`."""

    marker = ""

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


def _write_checkpoint(run: Path, kind: str, marker: Path) -> Path:
    last = run / "checkpoints" / "last.ckpt"
    if kind == "garbage":
        last.write_bytes(b"not a checkpoint at all\n" * 10)
    elif kind == "truncated":
        last.write_bytes(last.read_bytes()[:1000])
    else:
        Payload.marker = str(marker)
        torch.save({"state_dict": Payload(), "epoch": 0}, last)
    return last


@pytest.mark.parametrize("kind", ["garbage", "truncated", "pickle payload"])
def test_resume_from_a_damaged_checkpoint_never_runs_code_nor_touches_the_run(runs, tmp_path, kind):
    """What holds today: the payload never runs (Lightning's torch.load defaults to weights_only=True on this torch)
    and the run's exported model and metrics stay byte-identical."""
    run = copy_run(runs, "static", f"ckpt_{kind.split()[0]}")
    marker = tmp_path / "pwned"
    _write_checkpoint(run, kind, marker)
    if kind == "pickle payload":  # the payload is live: plain unpickling would run it
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
        assert marker.exists()
        marker.unlink()
    kept = {name: (run / name).read_bytes() for name in ("model.safetensors", "model.json", "metrics.json")}
    config = load_config("configs/mosi/static.yaml", [f"--output_dir={runs}", f"--name={run.name}", *FAST])
    with pytest.raises(Exception):  # noqa: B017, PT011 — which one is the point of the xfail test below
        train_run(config, resume=True)
    assert not marker.exists()
    assert {name: (run / name).read_bytes() for name in kept} == kept


@pytest.mark.parametrize("kind", ["garbage", "truncated", "pickle payload"])
def test_resume_from_a_damaged_checkpoint_is_one_clear_error(capsys, monkeypatch, runs, tmp_path, kind):
    run = copy_run(runs, "static", f"ckpt_clear_{kind.split()[0]}")
    _write_checkpoint(run, kind, tmp_path / "pwned")
    args = ["train", "configs/mosi/static.yaml", f"--output_dir={runs}", f"--name={run.name}", "--resume", *FAST]
    refused(capsys, monkeypatch, args, "last.ckpt", run)


# ----------------------------------------------------------------------------- dynmm eval


def test_eval_reads_nothing_but_the_export_and_writes_nothing(capsys, monkeypatch, runs):
    run = copy_run(runs, "static", "eval_ok")
    (run / "config.yaml").write_text("name: [\n")  # eval does not read the run's config
    before = snapshot(run)
    code, out = cli(capsys, monkeypatch, "eval", str(run))
    assert code == 0 and "acc2" in out, out
    assert snapshot(run) == before


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (("model.json", b"[]"), "model.json must hold a JSON object"),
        (("model.json", b'{"format_version": 1'), "model.json is not valid JSON"),
        (("model.json", b"\xff\xfe"), "model.json is not valid JSON"),
        (("model.safetensors", b"\x00" * 16), "model.safetensors is not a readable safetensors file"),
        (("model.safetensors", "TRUNCATE"), "model.safetensors is not a readable safetensors file"),
        (("metrics.json", b"{"), "metrics.json is not valid JSON"),
        (("metrics.json", b"[1, 2]"), "metrics.json must hold a JSON object"),
    ],
)
def test_eval_of_a_damaged_run_is_one_line_and_touches_nothing(capsys, monkeypatch, runs, damage, message):
    """Fixed: model.json holding a list, and a damaged metrics.json, used to end in tracebacks."""
    run = copy_run(runs, "static", "eval_damaged")
    name, content = damage
    path = run / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if content == "TRUNCATE" else content)
    refused(capsys, monkeypatch, ["eval", str(run)], message, run)


def test_eval_with_wrong_json_values_in_model_json(capsys, monkeypatch, runs):
    """Fixed: data.batch_size 0 in model.json used to fail inside torch's DataLoader."""
    run = copy_run(runs, "static", "eval_values")
    description = json.loads((run / "model.json").read_text())
    description["data"]["batch_size"] = 0
    (run / "model.json").write_text(json.dumps(description))
    refused(capsys, monkeypatch, ["eval", str(run)], "data.batch_size must be >= 1, got 0", run)
    description["data"]["batch_size"] = 8
    description["modalities"]["text"]["shape"] = ["100"]
    (run / "model.json").write_text(json.dumps(description))
    refused(capsys, monkeypatch, ["eval", str(run)], "modality 'text': shape must be a list of positive integers", run)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "dev"], "unknown split 'dev'"),
        (["--noise", "text:gaussian:loud"], "level 'loud' is not a number"),
        (["--noise", "smell:gaussian:1"], "smell"),
        (["--drop", "smell"], "unknown modality ['smell']"),
        (["--beta", "1"], "need a DynMM run"),
    ],
)
def test_eval_refuses_bad_options(capsys, monkeypatch, runs, args, message):
    refused(capsys, monkeypatch, ["eval", str(runs / "static"), *args], message, runs / "static")


def test_eval_of_a_dynmm_run_with_an_impossible_budget(capsys, monkeypatch, runs):
    refused(
        capsys,
        monkeypatch,
        ["eval", str(runs / "dynmm"), "--target-madds", "1"],
        "below the cheapest routing",
        runs / "dynmm",
    )


# ----------------------------------------------------------------------------- dynmm report


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("metrics.json", b'{"valid": ', "metrics.json is not valid JSON"),
        ("metrics.json", b"[]", "metrics.json must hold a JSON object"),
        ("routing.json", b"\x00\x01", "routing.json is not valid JSON"),
        ("model.json", b"", "model.json is not valid JSON"),
        ("routing.json", None, "routing.json is missing"),
    ],
)
def test_report_of_a_damaged_run_touches_nothing(capsys, monkeypatch, runs, name, content, message):
    """Fixed: damaged JSON files of a run used to end in JSONDecodeError tracebacks."""
    run = copy_run(runs, "dynmm", "report_damaged")
    if content is None:
        (run / name).unlink()
    else:
        (run / name).write_bytes(content)
    refused(capsys, monkeypatch, ["report", str(run)], message, run)


def test_report_with_a_damaged_sweep_or_speed_file(capsys, monkeypatch, runs, tmp_path):
    run = copy_run(runs, "dynmm", "report_extra")
    sweep = tmp_path / "sweep.json"
    sweep.write_text("{")
    refused(capsys, monkeypatch, ["report", str(run), "--sweep", str(sweep)], "sweep.json is not valid JSON", run)
    (run / "speed.json").write_text("not json")
    refused(capsys, monkeypatch, ["report", str(run)], "speed.json is not valid JSON", run)


def test_report_of_a_static_run_or_no_run(capsys, monkeypatch, runs, tmp_path):
    refused(capsys, monkeypatch, ["report", str(runs / "static")], "routing.json is missing", runs / "static")
    refused(capsys, monkeypatch, ["report", str(tmp_path)], "metrics.json is missing")


def test_report_rebuilds_without_touching_model_or_metrics(capsys, monkeypatch, runs):
    run = copy_run(runs, "dynmm", "report_ok")
    kept = {
        name: (run / name).read_bytes() for name in ("model.safetensors", "model.json", "metrics.json", "routing.json")
    }
    code, out = cli(capsys, monkeypatch, "report", str(run))
    assert code == 0, out
    assert {name: (run / name).read_bytes() for name in kept} == kept


# ----------------------------------------------------------------------------- sweep, search, data, bench


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep", "configs/mosi/dynmm.yaml", "--lambdas=a,b"], "--lambdas takes comma-separated numbers"),
        (["sweep", "configs/mosi/static.yaml"], "needs a config with a `dynmm`, `fusion_level` or `adamml` section"),
        (["search", "mfas", "configs/mosi/static.yaml"], "needs a config with an `mfas` section"),
        (["search", "mfas", "configs/mosi/mfas.yaml", "--mfas.layers=many"], "config key 'mfas.layers' expects int"),
        (["data", "check", "/nonexistent", "--format", "pickle"], "unknown format 'pickle'"),
        (["bench", "speed", "--batch-sizes=a"], "take comma-separated numbers"),
        (["bench", "speed", "--batch-sizes=0"], "batch sizes must be >= 1"),
        (["bench", "speed", "--modes=fast"], "--modes takes a comma-separated subset"),
        (["bench", "speed", "--scales=huge"], "unknown scale(s) ['huge']"),
        (["bench", "fusion-speed", "RUNS/static", "--batch-sizes=1", "--repeats=1"], "needs a fusion-level DynMM run"),
        (["bench", "adamml-speed", "RUNS/static", "--batch-sizes=x"], "--batch-sizes takes comma-separated integers"),
        (["bench", "speed", "--run", "RUNS/static", "--batch-sizes=1"], "needs a modality-level DynMM run"),
        (["bench", "baselines", "--spec", "/nonexistent.yaml"], "config file not found"),
    ],
)
def test_other_commands_refuse_bad_input(capsys, monkeypatch, runs, args, message):
    args = [a.replace("RUNS", str(runs)) for a in args]
    refused(capsys, monkeypatch, args, message, runs / "static")


def test_data_check_of_a_truncated_file_reports_a_problem(capsys, monkeypatch, tmp_path):
    from tests.data.fixture_mmimdb import write_mmimdb_fixture

    path = write_mmimdb_fixture(tmp_path / "multimodal_imdb.hdf5", [])
    path.write_bytes(path.read_bytes()[:4096])
    code, out = cli(capsys, monkeypatch, "data", "check", str(path), "--format", "mmimdb")
    assert code == 1 and "truncated file" in " ".join(out.split()), out


def test_resume_from_a_damaged_checkpoint_keeps_the_saved_config(capsys, monkeypatch, runs, tmp_path):
    run = copy_run(runs, "static", "ckpt_config_kept")
    _write_checkpoint(run, "garbage", tmp_path / "pwned")
    saved = (run / "config.yaml").read_bytes()
    args = ["train", "configs/mosi/static.yaml", f"--output_dir={runs}", f"--name={run.name}", "--resume", *FAST]
    refused(capsys, monkeypatch, [*args, "--train.max_epochs=9"], "last.ckpt", run)
    assert (run / "config.yaml").read_bytes() == saved
