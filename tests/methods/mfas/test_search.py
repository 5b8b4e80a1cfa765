import pytest
from tests.methods.mfas.conftest import TASK

from dynmm.errors import DataError
from dynmm.methods.mfas.evaluate_architecture import FusionTraining, train_architecture
from dynmm.methods.mfas.search import SearchSettings, run_mfas, run_random
from dynmm.methods.mfas.surrogate import SurrogateSettings

TRAINING = FusionTraining(width=6, epochs=1, lr=1e-2, weight_decay=0.0, batch_size=32)
SETTINGS = SearchSettings(first_step_samples=12, samples_per_step=4, surrogate=SurrogateSettings(epochs=20))


class Killed(Exception):
    pass


def evaluator(space, cache, kill_at=None):
    calls = []

    def evaluate(arch, seed, store):
        if kill_at is not None and len(calls) == kill_at:
            raise Killed
        calls.append(arch)
        result = train_architecture(space, arch, cache, TASK, TRAINING, seed, store)
        return {"score": result.metrics["valid"]["accuracy"]}

    return evaluate, calls


def without_timing(state):
    steps = [{k: v for k, v in s.items() if k != "seconds"} for s in state.steps]
    return state.evaluations, steps, state.picks


def test_progressive_search_grows_one_position_per_step(space, cache, tmp_path):
    evaluate, calls = evaluator(space, cache)
    state = run_mfas(space, evaluate, SETTINGS, tmp_path / "s", seed=0)
    assert state.done and len(state.steps) == space.max_layers
    assert [len(s["evaluated"]) for s in state.steps] == [12, 4, 4]
    depths = {s["step"]: {state.evaluations[i]["layers"] for i in s["evaluated"]} for s in state.steps}
    assert depths[0] == {1} and depths[1] == {2} and depths[2] == {3}
    assert len({tuple(map(tuple, e["architecture"])) for e in state.evaluations}) == len(state.evaluations)
    assert all(e["predicted"] is not None for e in state.evaluations[12:])
    assert state.steps[0]["surrogate_spearman"] is None and state.steps[1]["surrogate_mae"] is not None
    temperatures = [s["temperature"] for s in state.steps]
    assert temperatures == sorted(temperatures, reverse=True)
    assert len(calls) == len(state.evaluations)


@pytest.mark.parametrize(("kill_at", "saved"), [(5, 0), (14, 12), (19, 16)])
def test_killed_search_resumes_to_the_same_result(space, cache, tmp_path, kill_at, saved):
    reference = run_mfas(space, evaluator(space, cache)[0], SETTINGS, tmp_path / "ref", seed=1)
    killed, _ = evaluator(space, cache, kill_at=kill_at)
    with pytest.raises(Killed):
        run_mfas(space, killed, SETTINGS, tmp_path / "run", seed=1)
    resumed_eval, calls = evaluator(space, cache)
    resumed = run_mfas(space, resumed_eval, SETTINGS, tmp_path / "run", seed=1)
    assert without_timing(resumed) == without_timing(reference)
    assert len(calls) == len(reference.evaluations) - saved  # finished steps were not redone
    again_eval, again_calls = evaluator(space, cache)
    run_mfas(space, again_eval, SETTINGS, tmp_path / "run", seed=1)
    assert again_calls == []


def test_random_search_matches_the_budget_and_resumes(space, cache, tmp_path):
    evaluate, _ = evaluator(space, cache)
    state = run_random(space, evaluate, 10, 4, True, tmp_path / "r", seed=0)
    assert len(state.evaluations) == 10 and [len(s["evaluated"]) for s in state.steps] == [4, 4, 2]
    killed, _ = evaluator(space, cache, kill_at=6)
    with pytest.raises(Killed):
        run_random(space, killed, 10, 4, True, tmp_path / "r2", seed=0)
    resumed = run_random(space, evaluator(space, cache)[0], 10, 4, True, tmp_path / "r2", seed=0)
    assert without_timing(resumed) == without_timing(state)


def test_state_of_another_search_is_refused(space, cache, tmp_path):
    evaluate, _ = evaluator(space, cache)
    run_random(space, evaluate, 2, 2, False, tmp_path / "r", seed=0)
    with pytest.raises(DataError, match="random search of seed 0, not mfas 0"):
        run_mfas(space, evaluate, SETTINGS, tmp_path / "r", seed=0)
    (tmp_path / "r" / "state.json").write_text("{not json")
    with pytest.raises(DataError, match="is not a search state"):
        run_random(space, evaluate, 2, 2, False, tmp_path / "r", seed=0)


def test_the_avmnist_paper_config_searches_the_papers_space_with_its_budget(tmp_path):
    """MFAS on AV-MNIST: 3 image blocks × 5 audio blocks × 3 nonlinearities per layer, up to 4 layers, and
    3 iterations × 4 positions × 15 samples = 180 evaluations (scores here are random: only the budget counts)."""
    import dataclasses
    import random

    from dynmm.config import load_config
    from dynmm.methods.mfas.recipe import mfas_section, search_settings
    from dynmm.methods.mfas.space import SearchSpace

    mfas = mfas_section(load_config("configs/avmnist/mfas.yaml", []))
    space = SearchSpace(
        ("image", "audio"),
        {"image": ("relu1", "relu2", "relu3"), "audio": tuple(f"relu{i}" for i in range(1, 6))},
        {"image": (24, 48, 96), "audio": (24, 48, 96, 192, 384)},
        tuple(mfas.activations),
        mfas.layers,
    )
    assert len(space.layer_choices()) == 45 and mfas.top_k == 5 and mfas.candidate_layers == ["relu"]
    scores = random.Random(0)
    settings = dataclasses.replace(search_settings(mfas), surrogate=SurrogateSettings(epochs=2))
    state = run_mfas(space, lambda arch, seed, store: {"score": scores.random()}, settings, tmp_path / "s", seed=0)
    assert len(state.evaluations) == 180 and len(state.steps) == 12
    assert {s["iteration"] for s in state.steps} == {0, 1, 2}
