"""dynmm: dynamic multimodal fusion that really skips the work it routes around.

The public Python API (`dynmm.api`) is available from the package itself: `dynmm.fit_gate`, `dynmm.route`,
`dynmm.MLPGate`, ... Those names are loaded lazily (PEP 562) on first use, so that `import dynmm` stays cheap:
the command line imports it on every call and should not pay for torch and Lightning before it needs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Registers every method's config section (`dynmm:`, `adamml:`, ...) with dynmm.config; light (no torch).
import dynmm.methods  # noqa: E402, F401

if TYPE_CHECKING:  # type checkers and IDEs see the names; at run time __getattr__ loads them
    from dynmm.api import *  # noqa: F403


def __getattr__(name: str) -> Any:
    """The public names (and `__all__`) come from dynmm.api, imported on first use."""
    if name.startswith("__") and name != "__all__":
        raise AttributeError(f"module 'dynmm' has no attribute {name!r}")
    api = import_module("dynmm.api")  # not `from dynmm import api`: that would look the name up here first

    if name == "__all__":
        return [*api.__all__, "__version__"]
    if name in api.__all__:
        value = getattr(api, name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'dynmm' has no attribute {name!r}")


def __dir__() -> list[str]:
    api = import_module("dynmm.api")
    return sorted({*globals(), *api.__all__})
