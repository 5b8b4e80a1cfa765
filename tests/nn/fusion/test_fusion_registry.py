import pytest

from dynmm.errors import ConfigError
from dynmm.nn.fusion import FUSIONS, Fusion, build_fusion, fusion_options, register_fusion
from dynmm.nn.fusion.gated import GatedMultimodalUnit
from dynmm.nn.fusion.tensor import LowRankFusion

DIMS = {"audio": 3, "text": 4}


def test_every_op_is_registered():
    assert set(FUSIONS) == {
        "unimodal",
        "concat",
        "late_mean",
        "late_weighted",
        "tfn",
        "lmf",
        "mi",
        "gmu",
        "transformer",
    }
    assert all(issubclass(cls, Fusion) for cls in FUSIONS.values())


def test_build_by_name_passes_options():
    fusion = build_fusion("lmf", DIMS, 5, rank=7)
    assert isinstance(fusion, LowRankFusion)
    assert fusion.rank == 7 and fusion.fusion_weights.shape == (1, 7)
    assert isinstance(build_fusion("gmu", DIMS, 5), GatedMultimodalUnit)


def test_unknown_name_suggests_closest_and_lists_available():
    with pytest.raises(ConfigError) as err:
        build_fusion("tfm", DIMS, 5)
    msg = str(err.value)
    assert "'tfm'" in msg and "did you mean 'tfn'" in msg
    assert all(name in msg for name in FUSIONS)


def test_unknown_name_without_close_match_has_no_suggestion():
    with pytest.raises(ConfigError) as err:
        build_fusion("zzzzzz", DIMS, 5)
    assert "did you mean" not in str(err.value) and "concat" in str(err.value)


def test_unknown_option_is_named_with_accepted_ones():
    with pytest.raises(ConfigError) as err:
        build_fusion("lmf", DIMS, 5, rnak=2)
    assert "'rnak'" in str(err.value) and "accepted: rank" in str(err.value)
    with pytest.raises(ConfigError, match="'heads'.*accepted: d_model, nhead, num_layers"):
        build_fusion("transformer", DIMS, 5, heads=2)
    with pytest.raises(ConfigError, match="'rank'.*accepted: none"):
        build_fusion("concat", DIMS, 5, rank=2)


def test_fusion_options():
    assert fusion_options("mi") == ["context"]
    assert fusion_options("tfn") == []
    assert fusion_options("transformer") == ["d_model", "nhead", "num_layers", "dim_feedforward", "dropout"]


def test_only_late_fusion_produces_predictions():
    assert {n for n, cls in FUSIONS.items() if cls.produces_predictions} == {"late_mean", "late_weighted"}


def test_register_rejects_a_taken_name():
    class Other(Fusion):
        pass

    with pytest.raises(ConfigError, match="'concat' is already taken"):
        register_fusion("concat")(Other)
    try:
        assert register_fusion("test_only_other")(Other) is Other
        assert FUSIONS["test_only_other"] is Other
    finally:
        FUSIONS.pop("test_only_other", None)


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="at least one modality"):
        build_fusion("concat", {}, 3)
    with pytest.raises(ConfigError, match="positive integers.*'text': 0"):
        build_fusion("concat", {"text": 0}, 3)
    with pytest.raises(ConfigError, match="out_dim"):
        build_fusion("concat", DIMS, 0)
    with pytest.raises(ConfigError, match="without '.'"):
        build_fusion("concat", {"a.b": 2}, 3)
    with pytest.raises(ConfigError, match="rank"):
        build_fusion("lmf", DIMS, 3, rank=0)
