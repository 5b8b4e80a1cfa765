"""Strict config loading: unknown keys and wrong types are named; overrides reach nested keys."""

import pytest
import yaml

from dynmm.config import RunConfig, dump_config, from_dict, load_config, parse_overrides
from dynmm.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_are_merged(tmp_path):
    path = write(tmp_path, "name: a\ntrain:\n  max_epochs: 5\nmodel:\n  encoders: {default: {kind: mlp}}\n")
    config = load_config(path, ["--train.max_epochs=7", "--model.fusion", "tfn", "--train.lr=0.01"])
    assert config.name == "a"
    assert config.train.max_epochs == 7
    assert config.train.lr == pytest.approx(0.01)
    assert config.model.fusion == "tfn"
    assert config.model.encoders == {"default": {"kind": "mlp"}}


def test_unknown_key_is_named_with_suggestion(tmp_path):
    path = write(tmp_path, "train:\n  max_epoch: 5\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_epoch'.*did you mean 'max_epochs'"):
        load_config(path)


def test_unknown_override_is_named(tmp_path):
    with pytest.raises(ConfigError, match="'model.fuson'"):
        load_config(write(tmp_path, "name: a\n"), ["--model.fuson=tfn"])


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"'train.max_epochs' expects int, got 'two'"):
        load_config(write(tmp_path, "name: a\n"), ["--train.max_epochs=two"])
    with pytest.raises(ConfigError, match=r"'model.modalities\[1\]' expects str"):
        from_dict(RunConfig, {"model": {"modalities": ["text", 3]}})


def test_int_is_accepted_for_float_but_bool_is_not_an_int():
    assert from_dict(RunConfig, {"train": {"lr": 1}}).train.lr == 1.0
    with pytest.raises(ConfigError):
        from_dict(RunConfig, {"train": {"max_epochs": True}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="--section.key=value"):
        parse_overrides(["train.max_epochs=3"])
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["--train.max_epochs"])


def test_dump_roundtrip(tmp_path):
    config = load_config(write(tmp_path, "name: b\nseed: 3\n"), ["--data.options.split_column=split_heldout"])
    again = load_config(write(tmp_path, dump_config(config)))
    assert again == config


def test_override_of_another_kind_replaces_instead_of_merging(tmp_path):
    path = write(tmp_path, "model:\n  encoders:\n    default: {kind: mlp, hidden: [64], dropout: 0.3}\n")
    config = load_config(path, ["--model.encoders.default={kind: identity}"])
    assert config.model.encoders["default"] == {"kind": "identity"}
    same_kind = load_config(path, ["--model.encoders.default={kind: mlp, dropout: 0.1}"])
    assert same_kind.model.encoders["default"] == {"kind": "mlp", "hidden": [64], "dropout": 0.1}


def test_a_config_saved_before_the_method_packages_loads_unchanged(tmp_path):
    """Run folders hold config.yaml with every method section (null where unused); they still load and compare
    equal, so `--resume` and run reuse keep working."""
    text = "name: old\ndynmm: null\nfusion_level: null\nadamml: null\nmfas: null\n"
    config = load_config(write(tmp_path, text))
    assert config.present_sections() == []
    assert load_config(write(tmp_path, dump_config(config))) == config
    assert list(yaml.safe_load(dump_config(config)))[-4:] == ["dynmm", "fusion_level", "adamml", "mfas"]
