"""The method registry: which method a config trains, which one owns a run folder, and the README's recipe for
adding a method (its code block is executed here, so the recipe cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import dynmm.methods
import dynmm.methods.registry as registry
from dynmm.config import SECTIONS, load_config
from dynmm.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_a_config_without_a_method_section_trains_the_static_model(tmp_path):
    assert registry.method_for(load_config(write(tmp_path, "name: a\n"))).name == "static"
    assert registry.method_for(load_config("configs/avdigits/dynmm.yaml")).name == "modality_level"
    assert registry.method_for(load_config("configs/rgbd_synth/dynmm_fusion.yaml")).name == "fusion_level"
    assert registry.method_for(load_config("configs/avclips/adamml.yaml")).name == "adamml"


def test_two_trainable_sections_are_refused(tmp_path):
    config = load_config(write(tmp_path, "dynmm: {}\nadamml: {}\n"))
    with pytest.raises(ConfigError, match="at most one of the sections .*this one has `dynmm`, `adamml`"):
        registry.method_for(config)


def test_a_run_folder_belongs_to_the_method_that_wrote_it(tmp_path):
    (tmp_path / "mfas.json").write_text("{}")
    assert registry.method_for_run(tmp_path).name == "mfas"
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.json").write_text('{"model_type": "adamml"}')
    assert registry.method_for_run(other).name == "adamml"


def _readme_block(heading: str) -> str:
    section = README.read_text().split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return block


def test_the_readme_recipe_adds_a_method_with_one_package_and_one_registry_line(tmp_path, monkeypatch):
    namespace: dict = {}
    exec(compile(_readme_block("## Architecture"), "README.md", "exec"), namespace)
    method = namespace["MY_METHOD"]
    trained = []

    def run_my_recipe(config, resume):
        trained.append(config.section("my_method").resource_weight)
        return "result"

    monkeypatch.setattr(type(method), "train", lambda self, config, resume: run_my_recipe(config, resume))
    methods = (*dynmm.methods.METHODS, method)  # the one registry line
    monkeypatch.setattr(dynmm.methods, "METHODS", methods)
    monkeypatch.setattr(registry, "METHODS", methods)
    monkeypatch.setitem(SECTIONS, method.section, method.config)  # what importing the registry does

    config = load_config(write(tmp_path, "name: x\nmy_method: {resource_weight: 0.5}\n"), [f"--output_dir={tmp_path}"])
    assert registry.method_for(config) is method
    assert registry.train_run(config) == "result" and trained == [0.5]
    with pytest.raises(ConfigError, match=r"unknown config key 'my_method.resource_weigth' \(did you mean"):
        load_config(write(tmp_path, "my_method: {resource_weigth: 1}\n"))
