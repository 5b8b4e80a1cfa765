"""Short real trainings from the shipped configs: fusion must beat its parts on the bundled data.

Loose floors, not exact values: the measured numbers live in benchmarks/results/baselines.json.
"""

import pytest

from dynmm.config import load_config
from dynmm.methods.registry import train_run


def train(tmp_path, config, name, *overrides):
    base = [f"--output_dir={tmp_path}", f"--name={name}", "--train.progress_bar=false"]
    return train_run(load_config(config, [*base, *overrides])).metrics["test"]


def test_mosi_late_fusion_beats_audio_and_reaches_text_level(tmp_path):
    config = "configs/mosi/static.yaml"
    late = train(tmp_path, config, "late")
    audio = train(tmp_path, config, "audio", "--model.fusion=unimodal", "--model.modalities=[audio]")
    assert late["acc2"] >= 0.72  # text-level accuracy on unseen videos (majority class: 0.62)
    assert late["acc2"] > audio["acc2"] + 0.1
    assert late["corr"] > 0.5


AV_SMALL = ["--data.options.train_size=2000", "--data.options.test_size=1000", "--train.max_epochs=3"]


def test_avdigits_late_fusion_beats_each_modality_alone(tmp_path):
    config = "configs/avdigits/static.yaml"
    late = train(tmp_path, config, "late", *AV_SMALL)
    image = train(tmp_path, config, "image", *AV_SMALL, "--model.fusion=unimodal", "--model.modalities=[image]")
    audio = train(tmp_path, config, "audio", *AV_SMALL, "--model.fusion=unimodal", "--model.modalities=[audio]")
    assert late["accuracy"] > max(image["accuracy"], audio["accuracy"]) + 0.05


@pytest.mark.slow
def test_avdigits_full_schedule_every_fusion_beats_both_modalities(tmp_path):
    config = "configs/avdigits/static.yaml"
    image = train(tmp_path, config, "image", "--model.fusion=unimodal", "--model.modalities=[image]")
    audio = train(tmp_path, config, "audio", "--model.fusion=unimodal", "--model.modalities=[audio]")
    for fusion in ("concat", "late_mean", "lmf", "gmu"):
        fused = train(tmp_path, config, fusion, f"--model.fusion={fusion}")
        assert fused["accuracy"] > max(image["accuracy"], audio["accuracy"]), fusion
