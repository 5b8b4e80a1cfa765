"""`dynmm bench paper-costs`: measured parts next to the papers' numbers; a difference over 5 % or a missing
reference always carries an explanation."""

import pytest

from dynmm.errors import ConfigError
from dynmm.methods.paper_costs import TOLERANCE, paper_costs


def test_every_part_is_measured_and_every_gap_explained():
    result = paper_costs(["mmimdb", "mosei", "avmnist", "avmnist_mfas", "kinetics_sounds_adamml"])
    for setup in result["setups"]:
        for part in setup["parts"]:
            assert part["measured"] > 0, (setup["setup"], part["part"])
            if part["reference"] is None or abs(part["difference"]) > TOLERANCE:
                assert part["explanation"] and part["explanation"] != "no explanation recorded"
            else:
                assert part["explanation"] is None
            if part["reference"] is not None:
                expected = (part["measured"] - part["reference"]) / part["reference"]
                assert part["difference"] == pytest.approx(expected)
    mosei = {p["part"]: p for p in result["setups"][1]["parts"]}
    assert mosei["expert text"]["reference"] == mosei["expert text"]["authors_code"]  # the code, not the paper


def test_unknown_setup_is_named():
    with pytest.raises(ConfigError, match=r"unknown paper setup\(s\) \['imagenet'\]"):
        paper_costs(["imagenet"])
