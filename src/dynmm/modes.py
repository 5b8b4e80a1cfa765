"""Run a module in eval mode for a while and give it back in the mode it had."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Evaluation and cost counting must not leave a model that was training switched to eval."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
