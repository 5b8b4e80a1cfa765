"""Training with 2 processes (DDP, gloo on CPU) as real `dynmm train` processes: the same metrics as 1 process,
and a DynMM recipe whose gate routes differently on each rank finishes (no hang, no unused-parameter error) with
one consistent run folder, under Lightning's launcher and under torchrun.

Why the static comparison is meaningful: `data.batch_size` is per process in Lightning, so 2 ranks × 16 rows
against 1 process × 32 rows. MultimodalDataModule gives rank r every other row of the same epoch-seeded
permutation, so step k of the 2 ranks together sees exactly the 32 rows of step k of the single process, and DDP
averages the two half-batch mean gradients: the same optimisation up to the order of float additions. MOSI's
1,245 training rows leave a partial last batch, which the 2 ranks cannot split the same way (the odd row count is
padded with a repeated row), so the comparison trains on the first 38 full batches of each epoch
(`limit_train_batches=38`). Measured: every metric within 2.4e-7 after 3 epochs; the tolerance is 1e-5 on the
continuous metrics (float32 reduction noise, ~1e-7 per step, grown over 114 Adam steps) and one test utterance
(1/752) on the accuracies, in case a prediction sits within that noise of a class boundary.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dynmm.config import load_config
from dynmm.data.datamodule import EpochShuffle
from dynmm.engine.stages import data_module, stage_data
from dynmm.methods.evaluate_run import evaluate_exported
from dynmm.methods.modality_level.model import build_modality_level
from dynmm.methods.modality_level.module import DynMMGateModule
from dynmm.methods.modality_level.recipe import expert_run_config
from dynmm.nn.static_model import build_static_model

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240  # a hang fails the test instead of blocking the suite
LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# Rank 1's gate sends every row to expert 0 (text only) in training; rank 0's gate decides as trained. Each rank
# records the experts it routed to per step. Lightning's launcher re-runs this script for rank 1 (sys.argv), so
# the hook is in place on every rank.
PROBE = """
import json, os
import torch
import torch.distributed as dist
from dynmm.methods.modality_level.model import ModalityLevelDynMM

forward = ModalityLevelDynMM.forward


def probed(self, inputs, missing=()):
    if not self.training:
        return forward(self, inputs, missing)
    rank = dist.get_rank()
    if rank == 1:
        logits = self.gate.logits
        self.gate.logits = lambda x: logits(x) + torch.tensor([40.0, 0.0])
    try:
        out = forward(self, inputs, missing)
    finally:
        self.gate.__dict__.pop("logits", None)
    stage = "finetune" if any(p.requires_grad for p in self.experts.parameters()) else "gate"
    counts = torch.bincount(self.last_gate.choice, minlength=len(self.experts)).tolist()
    with open(os.path.join(os.environ["ROUTING_PROBE"], f"rank{rank}.jsonl"), "a") as f:
        f.write(json.dumps({"stage": stage, "counts": counts}) + "\\n")
    return out


ModalityLevelDynMM.forward = probed

if __name__ == "__main__":
    from dynmm.cli import main

    main()
"""

DYNMM_ARGS = [
    "configs/mosi/dynmm.yaml",
    "--train.max_epochs=1",
    "--dynmm.gate_train.max_epochs=2",
    "--dynmm.finetune_train={max_epochs: 1, lr: 1.0e-4}",  # experts trainable: every parameter must get a gradient
    "--data.batch_size=16",
]


def run(command: list[str], **env: str) -> str:
    """Run a command in its own session and return its output; on a hang, kill every rank it started."""
    clean = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**clean, "OMP_NUM_THREADS": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"{' '.join(command)} hung for {TIMEOUT_S} s:\n{out[-4000:]}")
    assert process.returncode == 0, out[-6000:]
    assert "not used in producing the loss" not in out
    return out


def dynmm_train(*args: str, **env: str) -> str:
    return run([sys.executable, "-m", "dynmm.cli", "train", *args, "--train.progress_bar=false"], **env)


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def assert_one_consistent_run_folder(run_dir: Path, stages: list[Path]) -> None:
    """Written once, by rank 0: no leftover temporary files, one log version per stage, and the export
    reproduces the recorded metrics."""
    assert not [p for p in run_dir.rglob("*.tmp")], "a half-written file was left behind"
    for stage in stages:
        assert [p.name for p in (stage / "logs").iterdir()] == ["version_0"], stage
        assert (stage / "checkpoints" / "last.ckpt").is_file()
    evaluation = evaluate_exported(run_dir, "test")
    for name, value in evaluation.recorded.items():
        assert evaluation.metrics[name] == pytest.approx(value, abs=1e-6), name


def test_two_processes_give_the_metrics_of_one(tmp_path):
    common = [
        "configs/mosi/static.yaml",
        f"--output_dir={tmp_path}",
        "--train.max_epochs=3",
        "--train.limit_train_batches=38",
    ]
    dynmm_train(*common, "--name=one", "--data.batch_size=32")
    dynmm_train(*common, "--name=two", "--data.batch_size=16", "--train.devices=2", "--train.strategy=ddp")
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert one["epochs"] == two["epochs"] == 3
    for split in ("valid", "test"):
        rows = 202 if split == "valid" else 752
        for name, value in one[split].items():
            tolerance = 1.0 / rows + 1e-6 if name.startswith("acc") else 1e-5
            assert two[split][name] == pytest.approx(value, abs=tolerance), (split, name)
    assert_one_consistent_run_folder(tmp_path / "two", [tmp_path / "two"])


def routing(probe: Path, rank: int, stage: str) -> list[list[int]]:
    lines = (probe / f"rank{rank}.jsonl").read_text().splitlines()
    return [r["counts"] for r in map(json.loads, lines) if r["stage"] == stage]


def test_dynmm_recipe_with_a_gate_that_routes_differently_on_each_rank(tmp_path):
    """Under Lightning's launcher (which starts rank 1 by re-running the command) and under torchrun (which
    starts both at once), gate and finetune stages included: no hang, no unused-parameter error, one run folder;
    the two launchers train the same model."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    runs = {}
    for launcher in ("lightning", "torchrun"):
        probe = tmp_path / f"probe_{launcher}"
        probe.mkdir()
        args = [*DYNMM_ARGS, f"--output_dir={tmp_path / launcher}", "--name=d", "--train.progress_bar=false"]
        if launcher == "lightning":
            command = [sys.executable, str(script), "train", *args, "--train.devices=2", "--train.strategy=ddp"]
        else:
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
            command = [*torchrun, str(script), "train", *args, "--train.devices=2", "--train.strategy=ddp"]
        run(command, ROUTING_PROBE=str(probe))
        run_dir = tmp_path / launcher / "d"
        for stage in ("gate", "finetune"):
            rank0, rank1 = routing(probe, 0, stage), routing(probe, 1, stage)
            assert len(rank0) == len(rank1) > 1, (launcher, stage)  # the same steps on both ranks
            assert all(counts[1] == 0 for counts in rank1), "rank 1 sends every row to the text expert"
            assert sum(counts[1] for counts in rank0) > 0, "rank 0 sends rows to late fusion too"
            assert rank0 != rank1
        for path in ("model.safetensors", "metrics.json", "routing.json", "report.html"):
            assert (run_dir / path).is_file(), path
        stages = [run_dir / "gate", run_dir / "finetune", run_dir / "experts" / "text"]
        assert_one_consistent_run_folder(run_dir, stages)
        runs[launcher] = metrics(run_dir)
    assert runs["lightning"]["test"] == runs["torchrun"]["test"]
    assert runs["lightning"]["routing"] == runs["torchrun"]["routing"]


@pytest.mark.parametrize("train_experts", [False, True], ids=["gate stage", "finetune stage"])
@pytest.mark.parametrize("expert", [0, 1])
def test_every_trainable_parameter_gets_a_gradient_when_the_gate_picks_one_expert_for_all_rows(train_experts, expert):
    """Why DDP needs no find_unused_parameters for modality-level DynMM: training is dense (every expert on every
    row, weighted by the straight-through one-hot), so even a rank whose gate sends all its rows to one expert
    puts every trainable parameter in the loss (the other experts get zero gradients, not missing ones)."""
    config = load_config("configs/mosi/dynmm.yaml", [])
    assert config.dynmm is not None
    data = data_module(config, stage_data(config, config.dynmm.gate_data))
    info = data.info
    experts = [
        build_static_model(expert_run_config(config, e, Path(".")).model, info.modalities, info.task)
        for e in config.dynmm.experts
    ]
    model = build_modality_level(experts, config.dynmm.gate, info.modalities)
    logits = model.gate.logits
    bias = torch.zeros(len(experts))
    bias[expert] = 40.0
    model.gate.logits = lambda x: logits(x) + bias  # type: ignore[method-assign]
    module = DynMMGateModule(model, info.task, 0.1, train_experts=train_experts)
    module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    module.train()
    module.on_train_epoch_start()
    module.training_step(next(iter(data.train_dataloader())), 0).backward()
    assert model.last_gate is not None and model.last_gate.choice.unique().tolist() == [expert]
    trainable = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    assert any(name.startswith("model.experts") for name, _ in trainable) == train_experts
    assert [name for name, p in trainable if p.grad is None] == []


@pytest.mark.parametrize("size", [10, 11, 1245])
def test_ranks_get_disjoint_epoch_seeded_shards_that_interleave_to_the_one_process_order(size):
    """What makes N ranks × B rows step like 1 process × N·B rows: rank r takes rows r, r + N, ... of the same
    (seed, epoch) permutation; an odd size is padded with the permutation's first rows (equal step counts)."""
    for epoch in (0, 3):
        whole = EpochShuffle(size, seed=7)
        whole.set_epoch(epoch)
        order = list(whole)
        shards = []
        for rank in range(2):
            shard = EpochShuffle(size, seed=7, rank=rank, world_size=2)
            shard.set_epoch(epoch)
            shards.append(list(shard))
            assert len(shards[-1]) == len(shard) == -(-size // 2)
        interleaved = [i for pair in zip(*shards, strict=True) for i in pair]
        assert interleaved[:size] == order
        assert interleaved[size:] == order[: len(interleaved) - size]
        assert set(shards[0][: size // 2]).isdisjoint(shards[1][: size // 2])
    shard = EpochShuffle(size, seed=7, rank=1, world_size=2)
    first = list(shard)
    shard.set_epoch(1)
    assert list(shard) != first  # a new order every epoch
