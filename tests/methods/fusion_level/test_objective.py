"""Stage II's objective: budget and routing-balance terms against hand computations, and their config refusals."""

import itertools
import math

import pytest
import torch

from dynmm.errors import ConfigError
from dynmm.methods.fusion_level.config import FusionLevelConfig
from dynmm.methods.fusion_level.model import FusionLevelDynMM, build_fusion_level
from dynmm.methods.fusion_level.module import FusionLevelModule, routing_balance
from dynmm.specs import ModalitySpec, TaskSpec

SIZE = (32, 48)
TASK = TaskSpec("segmentation", num_classes=5)


def build():
    torch.manual_seed(0)
    return FusionLevelDynMM("tiny", 5, SIZE, decoder_width=16, gate_width=8)


def one_hot_rows(model, stages):
    """One-hot weights of rows that run `stages[i]` depth stages: `add` in cells < stages[i], identity after."""
    choice = torch.zeros(len(stages), model.num_cells, dtype=torch.long)
    for row, count in enumerate(stages):
        choice[row, :count] = model.op_names.index("add")
    return choice, torch.nn.functional.one_hot(choice, len(model.op_names)).float()


def hand_cost(model, stages):
    """Mean normalised cost by hand: the chosen ops' MAdds plus the depth stages run, over the costliest routing."""
    cells, aux = model.costs["cells"], model.costs["aux_stages"]
    most = sum(max(c) for c in cells) + sum(aux)
    add = model.op_names.index("add")
    return sum(sum(cells[k][add] for k in range(n)) + sum(aux[:n]) for n in stages) / most / len(stages)


def test_stage_distribution_equals_enumerating_every_path():
    model = build()
    probs = torch.softmax(
        torch.randn(2, model.num_cells, len(model.op_names), generator=torch.Generator().manual_seed(3)), -1
    )
    got = model.aux_stage_distribution(probs)
    ops = range(len(model.op_names))
    expected = torch.zeros(2, model.num_cells + 1)
    for path in itertools.product(ops, repeat=model.num_cells):
        choice = torch.tensor([path, path])
        p = probs[:, range(model.num_cells), list(path)].prod(dim=1)
        expected[:, int(model.aux_stages_needed(choice)[0])] += p
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    choice, weights = one_hot_rows(model, [0, 2, 4])
    torch.testing.assert_close(model.aux_stage_distribution(weights), torch.eye(5)[[0, 2, 4]])


def test_balance_is_the_mutual_information_between_row_and_route():
    hist = torch.eye(5)[[0, 2, 2, 4]]  # hard rows: the entropy of the batch histogram
    by_hand = -(0.25 * math.log(0.25) * 2 + 0.5 * math.log(0.5)) / math.log(5)
    assert float(routing_balance(hist)) == pytest.approx(by_hand, rel=1e-6)
    assert float(routing_balance(torch.eye(5)[[2, 2, 2]])) == pytest.approx(0.0, abs=1e-9)  # one route for all
    assert float(routing_balance(torch.eye(5))) == pytest.approx(1.0, rel=1e-6)
    soft = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    mean_entropy = -(0.25 * math.log(0.25) * 2 + 0.5 * math.log(0.5))  # of (0.25, 0.25, 0, 0, 0.5)
    by_hand = (mean_entropy - math.log(2) / 2) / math.log(5)  # minus the rows' mean entropy (ln 2 and 0)
    assert float(routing_balance(soft)) == pytest.approx(by_hand, rel=1e-6)
    undecided = torch.full((4, 5), 0.2)  # every row random: spread, but the rows do not differ
    assert float(routing_balance(undecided)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(("budget", "balance_weight"), [(None, 0.0), (0.3, 0.0), (None, 0.2), (0.6, 0.5)])
def test_gate_penalty_as_defined(budget, balance_weight):
    model = build()
    module = FusionLevelModule(model, TASK, "gate", resource_weight=0.7, budget=budget, balance_weight=balance_weight)
    stages = [0, 2, 2, 4]
    _, model.last_weights = one_hot_rows(model, stages)
    model.last_logits = 40.0 * model.last_weights  # a gate sure of each row's route
    terms = module.gate_terms()
    cost = hand_cost(model, stages)
    balance = -(0.25 * math.log(0.25) * 2 + 0.5 * math.log(0.5)) / math.log(5) if balance_weight else 0.0
    resource = cost if budget is None else abs(cost - budget)
    assert float(terms["expected_cost"]) == pytest.approx(cost, rel=1e-5)
    assert float(terms["penalty"]) == pytest.approx(0.7 * resource - balance_weight * balance, rel=1e-5, abs=1e-7)


def test_training_loss_is_task_loss_plus_the_penalty():
    from dynmm.engine.task import task_loss

    model = build().eval()  # the argmax gate: the same routing on both forwards
    module = FusionLevelModule(model, TASK, "gate", resource_weight=0.5, budget=0.4, balance_weight=0.3)
    g = torch.Generator().manual_seed(1)
    inputs = {"rgb": torch.randn(6, 3, *SIZE, generator=g), "depth": torch.randn(6, 1, *SIZE, generator=g)}
    target = torch.randint(0, 5, (6, *SIZE), generator=g)
    with pytest.warns(UserWarning, match="self.log"):
        loss = module.training_step((inputs, target), 0)
    reference = task_loss(TASK, model(inputs), target) + module.gate_terms()["penalty"]
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-6)


def test_balance_reaches_the_gate():
    model = build().train()
    module = FusionLevelModule(model, TASK, "gate", balance_weight=1.0)
    g = torch.Generator().manual_seed(1)
    model({"rgb": torch.randn(8, 3, *SIZE, generator=g), "depth": torch.randn(8, 1, *SIZE, generator=g)})
    module.gate_terms()["penalty"].backward()
    assert model.gate.head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("budget", 0.0, r"fusion_level.budget must be a mean normalised cost in \(0, 1\], got 0.0"),
        ("budget", 1.5, "fusion_level.budget must be"),
        ("budget", float("nan"), "fusion_level.budget must be"),
        ("balance_weight", -0.1, "fusion_level.balance_weight must be finite and >= 0, got -0.1"),
        ("balance_weight", float("inf"), "fusion_level.balance_weight must be"),
        ("resource_weight", -1.0, r"fusion_level.resource_weight \(λ\) must be"),
    ],
)
def test_bad_objective_settings_name_the_key(key, value, message):
    specs = {"rgb": ModalitySpec("rgb", (3, *SIZE), "image"), "depth": ModalitySpec("depth", (1, *SIZE), "image")}
    with pytest.raises(ConfigError, match=message):
        build_fusion_level(FusionLevelConfig(**{key: value}), specs, TASK)


def test_defaults_keep_the_plain_resource_loss():
    config = FusionLevelConfig()
    assert config.budget is None and config.balance_weight == 0.0
    model = build()
    module = FusionLevelModule(model, TASK, "gate", resource_weight=0.3)
    _, model.last_weights = one_hot_rows(model, [1, 3])
    terms = module.gate_terms()
    assert float(terms["penalty"]) == float(0.3 * model.expected_cost(model.last_weights))
