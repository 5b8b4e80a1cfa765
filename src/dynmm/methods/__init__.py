"""The method registry. Adding a method is one package under `dynmm/methods/` whose `method.py` describes it (a
`dynmm.methods.base.Method`), plus one line in `METHODS` below.

Importing this package registers each method's config section, so that a run config accepts it; it stays light
(each `method.py` imports its heavy parts only when a hook runs). `dynmm.methods.registry` dispatches through it.
"""

from dynmm.config import register_section
from dynmm.methods.adamml.method import ADAMML
from dynmm.methods.base import Method
from dynmm.methods.fusion_level.method import FUSION_LEVEL
from dynmm.methods.mfas.method import MFAS
from dynmm.methods.modality_level.method import MODALITY_LEVEL
from dynmm.methods.static.method import STATIC

METHODS: tuple[Method, ...] = (STATIC, MODALITY_LEVEL, FUSION_LEVEL, ADAMML, MFAS)
"""Every method, in the order of their config sections in config.yaml."""

for _method in METHODS:
    if _method.section is not None and _method.config is not None:
        register_section(_method.section, _method.config)
