"""The runner is copied alone into every artifact: it may import nothing but the standard library, numpy and
onnxruntime (the verification also runs it where dynmm and torch cannot be imported)."""

import ast
import sys
from pathlib import Path

import dynmm.deploy

RUNNER = Path(dynmm.deploy.__file__).with_name("runner.py")


def test_runner_imports_only_numpy_onnxruntime_and_the_standard_library():
    tree = ast.parse(RUNNER.read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    outside = {name for name in imported if name not in sys.stdlib_module_names and name != "__future__"}
    assert outside == {"numpy", "onnxruntime"}
