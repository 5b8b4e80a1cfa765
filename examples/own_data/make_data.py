"""Write a small data set the way you would write your own: one array per modality, a target and a split.

    python make_data.py            -> my_data.npz (and my_data.parquet when pyarrow is installed)

The task: a digit-like label (4 classes) that the `text` features give on most rows; on "noisy" rows the text is
scrambled and only the `audio` sequence carries the label. Noisy rows are visible in the text (a large first
feature), so a gate that reads only the text can tell which rows need the costlier audio network.
"""

from __future__ import annotations

import numpy as np

ROWS, CLASSES, TEXT_DIM, STEPS, AUDIO_DIM = 3000, 4, 16, 20, 8


def make(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, CLASSES, ROWS)
    prototypes_text = rng.normal(size=(CLASSES, TEXT_DIM))
    prototypes_audio = rng.normal(size=(CLASSES, AUDIO_DIM))
    text = prototypes_text[target] + 0.8 * rng.normal(size=(ROWS, TEXT_DIM))
    noisy = rng.random(ROWS) < 0.3
    text[noisy] = prototypes_text[rng.integers(0, CLASSES, noisy.sum())] + 0.8 * rng.normal(size=(noisy.sum(), TEXT_DIM))
    text[noisy, 0] += 6.0  # what the gate can see
    audio = prototypes_audio[target][:, None, :] * rng.random((ROWS, STEPS, 1)) + rng.normal(size=(ROWS, STEPS, AUDIO_DIM))
    split = np.array(["train"] * 2000 + ["valid"] * 500 + ["test"] * 500)
    return {
        "text": text.astype(np.float32),
        "audio": audio.astype(np.float32),
        "target": target.astype(np.int64),
        "split": split,
    }


def main() -> None:
    arrays = make()
    np.savez("my_data.npz", **arrays)
    print("wrote my_data.npz:", {k: v.shape for k, v in arrays.items()})
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        print('pyarrow is not installed: skipping my_data.parquet (pip install "dynmm[arrow]")')
        return
    columns = {
        "text": pa.array(list(arrays["text"]), type=pa.list_(pa.float32(), TEXT_DIM)),
        "audio": pa.array([list(row) for row in arrays["audio"]], type=pa.list_(pa.list_(pa.float32(), AUDIO_DIM), STEPS)),
        "target": pa.array(arrays["target"]),
        "split": pa.array(arrays["split"]),
    }
    pq.write_table(pa.table(columns), "my_data.parquet")
    print("wrote my_data.parquet")


if __name__ == "__main__":
    main()
