"""Run a dynmm ONNX artifact with onnxruntime and numpy only: this file is copied into every artifact folder
(as `dynmm_runner.py`) and never imports dynmm or torch, so a server or an edge box needs neither.

    python dynmm_runner.py ARTIFACT INPUTS.npz OUTPUT.npz [--threads N]

INPUTS.npz holds one array per input named in ARTIFACT/manifest.json (float32, batch first); OUTPUT.npz gets
`outputs` (the predictions) and `choice` (the branch each row took; -1 for a model that skips nothing).

Batch 1 runs `model.onnx`: the router, then only the chosen branch, inside one graph (ONNX `If`). A larger
batch runs `router.onnx` once on every row, then each branch graph on just the rows routed to it (numpy gathers
the rows and puts the outputs back in order), so a branch nobody chose never runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

MANIFEST = "manifest.json"


def session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session; `threads`: intra-op threads (None: onnxruntime's default, all cores)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Artifact:
    """A dynmm artifact folder: `predict(inputs)` -> (outputs, choice), batch 1 or more."""

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        if self.manifest.get("format") != "onnx":
            raise ValueError(f"{self.folder}: this runner runs ONNX artifacts, not {self.manifest.get('format')!r}")
        self.inputs = {i["name"]: i for i in self.manifest["inputs"]}
        self.model = session(self.folder / self.manifest["model"], threads)
        router = self.manifest["router"]
        self.router = session(self.folder / router["graph"], threads) if router else None
        self.branches = [session(self.folder / b["graph"], threads) for b in self.manifest["branches"]]

    def check(self, inputs: dict[str, np.ndarray]) -> int:
        """Every input present, float32, of its per-row shape, all with the same rows; returns the batch size."""
        rows = set()
        for name, spec in self.inputs.items():
            if name not in inputs:
                raise ValueError(f"missing input {name!r}; the artifact needs {sorted(self.inputs)}")
            x = inputs[name]
            if x.dtype != np.float32 or list(x.shape[1:]) != spec["shape"]:
                raise ValueError(
                    f"input {name!r} must be float32 of shape (batch, {', '.join(map(str, spec['shape']))}), "
                    f"got {x.dtype} {tuple(x.shape)}"
                )
            rows.add(x.shape[0])
        if len(rows) != 1 or 0 in rows:
            raise ValueError(f"inputs must share one non-zero batch size, got {sorted(rows)}")
        return rows.pop()

    def predict(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        batch = self.check(inputs)
        feed = {name: inputs[name] for name in self.inputs}
        if self.router is None:  # a soft gate mixes every branch: one graph, any batch
            return self.model.run(["outputs"], feed)[0], np.full(batch, -1, dtype=np.int64)
        if batch == 1:
            outputs, choice = self.model.run(["outputs", "choice"], feed)
            return outputs, choice
        routed = self.router.run(None, feed)
        values = dict(zip((o.name for o in self.router.get_outputs()), routed, strict=True))
        values |= feed
        choice = values["choice"]
        out: np.ndarray | None = None
        for index, (branch, spec) in enumerate(zip(self.branches, self.manifest["branches"], strict=True)):
            rows = np.flatnonzero(choice == index)
            if rows.size == 0:
                continue
            result = branch.run(["outputs"], {name: values[name][rows] for name in spec["reads"]})[0]
            if out is None:
                out = np.zeros((batch, *result.shape[1:]), dtype=result.dtype)
            out[rows] = result
        assert out is not None
        return out, choice


def main(argv: list[str]) -> None:
    if len(argv) not in (3, 5) or (len(argv) == 5 and argv[3] != "--threads"):
        raise SystemExit(__doc__)
    threads = int(argv[4]) if len(argv) == 5 else None
    artifact = Artifact(argv[0], threads)
    with np.load(argv[1]) as data:
        inputs = {name: data[name] for name in data.files}
    batch = int(inputs[next(iter(artifact.inputs))].shape[0])
    outputs, choice = [], []
    for start in range(batch):  # one sample at a time, as a server answers requests
        o, c = artifact.predict({k: v[start : start + 1] for k, v in inputs.items()})
        outputs.append(o)
        choice.append(c)
    batched, batched_choice = artifact.predict(inputs)
    np.savez(
        argv[2],
        outputs=np.concatenate(outputs),
        choice=np.concatenate(choice),
        batched_outputs=batched,
        batched_choice=batched_choice,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
