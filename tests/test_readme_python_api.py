"""The public Python API: the README's "Python API" section runs as written (every python block, in order, in one
namespace), every name `dynmm` promises resolves, and `import dynmm` alone stays light."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dynmm

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Python API"


def python_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(SECTION)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README.md has no {SECTION!r} section"
    return re.findall(r"^```python\n(.*?)^```", match.group(1), re.S | re.M)


def test_the_section_has_runnable_examples():
    assert len(python_blocks()) >= 3


# Lightning's notes about the example's small DataLoaders are not what this test checks
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_python_api_section_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files the examples write (weights) land here
    namespace: dict[str, object] = {"__name__": "readme_python_api"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra threads only add overhead, a lot of it on a busy machine
    try:
        for index, block in enumerate(python_blocks()):
            exec(compile(block, f"README.md {SECTION} block {index + 1}", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # fit_gate wrote no logs and no checkpoints


def test_every_public_name_resolves_from_the_package():
    from dynmm import api

    assert set(dynmm.__all__) == {*api.__all__, "__version__"}
    assert len(set(api.__all__)) == len(api.__all__)
    for name in dynmm.__all__:
        assert getattr(dynmm, name) is not None, name
    assert dynmm.fit_gate is api.fit_gate and dynmm.route is api.route
    assert set(dynmm.__all__) <= set(dir(dynmm))
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        dynmm.no_such_name  # noqa: B018


def test_import_dynmm_does_not_load_lightning_or_the_api():
    code = "import dynmm, sys; print('lightning' in sys.modules, 'dynmm.api' in sys.modules, dynmm.__version__)"
    src = str(Path(dynmm.__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": src}
    )
    assert out.stdout.split() == ["False", "False", "0.1.0"]
