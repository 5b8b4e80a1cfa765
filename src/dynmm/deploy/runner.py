"""Run a dynmm ONNX artifact with onnxruntime and numpy only: this file is copied into every artifact folder
(as `dynmm_runner.py`) and never imports dynmm or torch, so a server or an edge box needs neither.

    python dynmm_runner.py ARTIFACT INPUTS.npz OUTPUT.npz [--threads N]

onnxruntime runs it on the CPU unless $DYNMM_ORT_PROVIDERS names other execution providers (e.g.
DYNMM_ORT_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider with onnxruntime-gpu installed).

INPUTS.npz holds one array per input named in ARTIFACT/manifest.json (float32, batch first); OUTPUT.npz gets
`outputs` (the predictions) and `choice` (what was run), computed one row at a time, and `batched_outputs` and
`batched_choice`, computed as one batch.

Layout "routed" (modality-level DynMM): `choice` is the branch each row took (-1 for a model that skips
nothing). Batch 1 runs `model.onnx`: the router, then only the chosen branch, inside one graph (ONNX `If`). A
larger batch runs `router.onnx` once on every row, then each branch graph on just the rows routed to it (numpy
gathers the rows and puts the outputs back in order), so a branch nobody chose never runs.

Layout "image" (fusion-level DynMM): one graph takes one image; inside it, ONNX `If` nodes run only the chosen
op of each cell and stop the depth encoder where the routing no longer reads it. A batch runs image by image.

Layout "segments" (AdaMML): `choice` is the 0/1 keep decision per (clip, segment, modality). `predict` takes
whole clips: `policy.onnx` decides every segment at once, then each `net_<modality>.onnx` runs once on all the
(clip, segment) pairs that keep it. `stream` goes segment by segment: `policy_step.onnx` carries the LSTM state
from one segment to the next, and the nets run on each segment's kept modalities as it arrives. Either way the
kept logits are late-fused with the exported fusion weights. One row at a time uses `stream`, the batch
`predict`, so both are checked.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

MANIFEST = "manifest.json"
PROVIDERS_VARIABLE = "DYNMM_ORT_PROVIDERS"


def providers() -> list[str]:
    """Execution providers from $DYNMM_ORT_PROVIDERS (comma-separated, e.g. CUDAExecutionProvider,
    CPUExecutionProvider with onnxruntime-gpu installed); the CPU one by default."""
    chosen = [p for p in os.environ.get(PROVIDERS_VARIABLE, "").split(",") if p]
    return chosen or ["CPUExecutionProvider"]


def session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime session; `threads`: intra-op threads (None: onnxruntime's default, all cores)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=providers())


def check_inputs(specs: dict[str, dict], inputs: dict[str, np.ndarray]) -> int:
    """Every input present, float32, of its per-row shape, all with the same rows; returns the batch size."""
    rows = set()
    for name, spec in specs.items():
        if name not in inputs:
            raise ValueError(f"missing input {name!r}; the artifact needs {sorted(specs)}")
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


class Artifact:
    """A routed (modality-level DynMM) artifact: `predict(inputs)` -> (outputs, choice), batch 1 or more."""

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

    def predict(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        batch = check_inputs(self.inputs, inputs)
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


class SegmentArtifact:
    """An AdaMML artifact: `predict(inputs)` -> (clip logits, keep (B, T, modalities)); see the module docstring."""

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        self.inputs = {i["name"]: i for i in self.manifest["inputs"]}
        self.modalities = self.manifest["modalities"]
        graphs = self.manifest["graphs"]
        self.policy = session(self.folder / graphs["policy"]["graph"], threads)
        self.step = session(self.folder / graphs["policy_step"]["graph"], threads)
        self.nets = {m: session(self.folder / graphs[f"net_{m}"]["graph"], threads) for m in self.modalities}
        self.weights = np.asarray(self.manifest["fusion_weights"], dtype=np.float32)

    def predict(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Whole clips: the policy once, then each net once on the pairs that keep it."""
        batch = check_inputs(self.inputs, inputs)
        logits = self.policy.run(None, {m: inputs[m] for m in self.modalities})
        keep = np.stack([z[..., 1] > z[..., 0] for z in logits], axis=2).astype(np.int64)  # argmax, ties to skip
        self._fallback(keep)
        fused = _Fusion(batch, self.weights)
        for i, m in enumerate(self.modalities):
            clips, steps = np.nonzero(keep[:, :, i])
            if clips.size:
                fused.add(i, clips, self.nets[m].run(None, {m: inputs[m][clips, steps]})[0])
        return fused.result(), keep

    def stream(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Segment by segment: the policy step on each segment, then the nets of the modalities it keeps."""
        batch = check_inputs(self.inputs, inputs)
        names, shape = self.manifest["state"]["names"], self.manifest["state"]["shape"]
        state = {n: np.zeros((shape[0], batch, shape[1]), dtype=np.float32) for n in names}
        keep = np.zeros((batch, self.manifest["segments"], len(self.modalities)), dtype=np.int64)
        fused = _Fusion(batch, self.weights)
        for t in range(keep.shape[1]):
            decided = self.step.run(None, {**{m: inputs[m][:, t] for m in self.modalities}, **state})
            count = len(self.modalities)
            logits, state = decided[:count], dict(zip(names, decided[count:], strict=True))
            for i, m in enumerate(self.modalities):
                rows = np.flatnonzero(logits[i][:, 1] > logits[i][:, 0])  # argmax, ties to skip
                keep[rows, t, i] = 1
                if rows.size:
                    fused.add(i, rows, self.nets[m].run(None, {m: inputs[m][rows, t]})[0])
        for i, rows in self._fallback(keep):
            m = self.modalities[i]
            fused.add(i, rows, self.nets[m].run(None, {m: inputs[m][rows, 0]})[0])
        return fused.result(), keep

    def _fallback(self, keep: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """A clip that keeps nothing gets the fallback modality on its first segment (marked in `keep`)."""
        empty = np.flatnonzero(keep.sum(axis=(1, 2)) == 0)
        if empty.size == 0:
            return []
        i = self.modalities.index(self.manifest["fallback"])
        keep[empty, 0, i] = 1
        return [(i, empty)]


class _Fusion:
    """Running sums of AdaMML's late fusion: Σ w_m·z over kept pairs / Σ w_m over kept pairs, per clip."""

    def __init__(self, batch: int, weights: np.ndarray) -> None:
        self.batch, self.weights = batch, weights
        self.total: np.ndarray | None = None
        self.weight = np.zeros(batch, dtype=np.float32)

    def add(self, modality: int, clips: np.ndarray, logits: np.ndarray) -> None:
        if self.total is None:
            self.total = np.zeros((self.batch, logits.shape[1]), dtype=np.float32)
        np.add.at(self.total, clips, self.weights[modality] * logits)  # a clip may appear once per segment
        np.add.at(self.weight, clips, self.weights[modality])

    def result(self) -> np.ndarray:
        assert self.total is not None
        return self.total / self.weight[:, None]


class ImageArtifact:
    """A fusion-level artifact: one graph that takes one image (its routing inside, ONNX `If`); `predict` runs a
    batch image by image -> (outputs, choice (B, cells))."""

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        self.inputs = {i["name"]: i for i in self.manifest["inputs"]}
        self.model = session(self.folder / self.manifest["graphs"]["model"]["graph"], threads)

    def predict(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        batch = check_inputs(self.inputs, inputs)
        results = [self.model.run(None, {m: inputs[m][i : i + 1] for m in self.inputs}) for i in range(batch)]
        return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


LAYOUTS: dict[str, type[Artifact] | type[SegmentArtifact] | type[ImageArtifact]] = {
    "routed": Artifact,
    "segments": SegmentArtifact,
    "image": ImageArtifact,
}


def load_artifact(folder: str | Path, threads: int | None = None) -> Artifact | SegmentArtifact | ImageArtifact:
    """The artifact in `folder`, by its manifest's layout."""
    layout = json.loads((Path(folder) / MANIFEST).read_text()).get("layout", "routed")
    return LAYOUTS[layout](folder, threads)


def main(argv: list[str]) -> None:
    if len(argv) not in (3, 5) or (len(argv) == 5 and argv[3] != "--threads"):
        raise SystemExit(__doc__)
    threads = int(argv[4]) if len(argv) == 5 else None
    artifact = load_artifact(argv[0], threads)
    with np.load(argv[1]) as data:
        inputs = {name: data[name] for name in data.files}
    batch = int(inputs[next(iter(artifact.inputs))].shape[0])
    outputs, choice = [], []
    one_by_one = getattr(artifact, "stream", artifact.predict)  # AdaMML: segment by segment
    for start in range(batch):  # one sample at a time, as a server answers requests
        o, c = one_by_one({k: v[start : start + 1] for k, v in inputs.items()})
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
