"""Affect and classification metrics against direct numpy computations."""

import numpy as np
import pytest
import torch

from dynmm.report.metrics import affect_metrics, build_metrics, classification_metrics, primary_metric
from dynmm.specs import TaskSpec


def test_affect_metrics_match_reference():
    rng = np.random.default_rng(0)
    target = np.round(rng.uniform(-3, 3, 200) * 2) / 2
    target[:15] = 0.0
    pred = target + rng.normal(0, 1.2, 200)
    result = {k: float(v) for k, v in affect_metrics()(torch.tensor(pred), torch.tensor(target)).items()}

    assert result["acc2"] == pytest.approx(np.mean((pred >= 0) == (target >= 0)))
    nz = target != 0
    assert result["acc2_nonzero"] == pytest.approx(np.mean((pred[nz] > 0) == (target[nz] > 0)))
    to7 = lambda x: np.round(np.clip(x, -3, 3))  # noqa: E731
    assert result["acc7"] == pytest.approx(np.mean(to7(pred) == to7(target)))
    assert result["mae"] == pytest.approx(np.mean(np.abs(pred - target)), rel=1e-5)
    assert result["corr"] == pytest.approx(np.corrcoef(pred, target)[0, 1], rel=1e-4)


def test_zero_labels_count_as_positive_only_in_the_non_negative_variant():
    pred = torch.tensor([-0.5, 0.5, 1.0])
    target = torch.tensor([0.0, 0.0, 2.0])
    metrics = affect_metrics()
    result = metrics(pred, target)
    assert float(result["acc2"]) == pytest.approx(2 / 3)  # 0 is non-negative: second and third right
    assert float(result["acc2_nonzero"]) == pytest.approx(1.0)  # only the last row counts


def test_classification_metrics_match_reference():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4))
    logits[np.arange(300), target] += 1.0
    result = classification_metrics(4)(torch.tensor(logits), torch.tensor(target))
    pred = logits.argmax(1)
    assert float(result["accuracy"]) == pytest.approx(np.mean(pred == target))
    f1s = []
    for c in range(4):
        tp = np.sum((pred == c) & (target == c))
        fp = np.sum((pred == c) & (target != c))
        fn = np.sum((pred != c) & (target == c))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    assert float(result["macro_f1"]) == pytest.approx(np.mean(f1s), rel=1e-5)


def test_build_metrics_by_task():
    assert "mae" in build_metrics(TaskSpec("regression"))
    assert "macro_f1" in build_metrics(TaskSpec("classification", 10))


def test_multilabel_task_metrics_loss_and_per_sample_correct():
    from dynmm.engine.task import predictions, task_loss
    from dynmm.methods.modality_level.routing_analysis import accuracy_name, per_sample_correct

    task = TaskSpec("multilabel", 4)
    assert task.output_dim == 4 and primary_metric(task) == ("f1_micro", "max")
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0], [-2.0, 1.0, -0.5, 0.1], [0.3, 0.2, 0.1, 0.0]])
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    metrics = build_metrics(task)
    metrics.update(predictions(task, logits), target)
    values = {k: float(v) for k, v in metrics.compute().items()}
    predicted = logits > 0  # sigmoid(0) = 0.5 is not above the threshold
    tp = (predicted & (target == 1)).sum().item()
    fp = (predicted & (target == 0)).sum().item()
    fn = (~predicted & (target == 1)).sum().item()
    assert values["f1_micro"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    correct = per_sample_correct(task, logits, target)
    assert correct.tolist() == [True, False, False]
    assert values[accuracy_name(task)] == pytest.approx(correct.float().mean().item())
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert float(task_loss(task, logits, target)) == pytest.approx(float(expected))
