"""Bad batches are refused with a message naming the modality and the expected vs actual value."""

import pytest
import torch

from dynmm.errors import InputError
from dynmm.specs import ModalitySpec
from dynmm.validation import check_inputs

SPECS = {"image": ModalitySpec("image", (1, 4, 4), "image"), "audio": ModalitySpec("audio", (6,), "vector")}


def good(batch=3):
    return {"image": torch.rand(batch, 1, 4, 4), "audio": torch.rand(batch, 6)}


def test_valid_batch_returns_size_and_extra_keys_are_allowed():
    inputs = good(5) | {"video": torch.rand(5, 2)}
    assert check_inputs(inputs, SPECS) == 5


def test_missing_modality_is_named():
    inputs = good()
    del inputs["audio"]
    with pytest.raises(InputError, match=r"missing modality 'audio'.*got keys \['image'\]"):
        check_inputs(inputs, SPECS)


def test_wrong_shape_names_modality_expected_and_got():
    inputs = good() | {"image": torch.rand(3, 4, 4)}
    with pytest.raises(InputError, match=r"'image' expected shape \(batch, 1, 4, 4\), got \(3, 4, 4\)"):
        check_inputs(inputs, SPECS)


def test_wrong_dtype_is_named():
    inputs = good() | {"audio": torch.ones(3, 6, dtype=torch.long)}
    with pytest.raises(InputError, match=r"'audio' must be a floating-point tensor, got dtype torch.int64"):
        check_inputs(inputs, SPECS)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_are_refused(bad):
    inputs = good()
    inputs["audio"][1, 2] = bad
    with pytest.raises(InputError, match=r"'audio' contains NaN or inf values in 1 sample"):
        check_inputs(inputs, SPECS)


def test_batch_size_mismatch_and_empty_batch():
    with pytest.raises(InputError, match="batch sizes differ"):
        check_inputs(good(3) | {"audio": torch.rand(2, 6)}, SPECS)
    with pytest.raises(InputError, match="empty batch"):
        check_inputs(good(0), SPECS)


def test_not_a_dict():
    with pytest.raises(InputError, match="dict of modality"):
        check_inputs(torch.rand(3, 6), SPECS)  # type: ignore[arg-type]


def test_inputs_checked_skips_the_checks_of_a_models_parts():
    from dynmm.validation import inputs_checked

    specs = {"a": ModalitySpec("a", (3,), "vector")}
    bad = {"a": torch.zeros(2, 4)}
    with pytest.raises(InputError, match="expected shape"):
        check_inputs(bad, specs)
    with inputs_checked():
        assert check_inputs(bad, specs) == 2  # the model checked at its door; its parts trust it
    with pytest.raises(InputError, match="expected shape"):  # and only inside the block
        check_inputs(bad, specs)
