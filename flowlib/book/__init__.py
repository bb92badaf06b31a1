"""The book layer: the computations that the chapters of *Tokens in Motion* rest on.

Each module is named by topic and follows the text (bounds, constants, closed forms and the helpers of
the chapters' experiments). It is tested and doctested like the core, but carries **no stability
promise**: it changes when the chapters do. Anything general that a chapter needs belongs in the core
(:mod:`flowlib`) instead.

=====================  =====================================================================
module                 topic (chapter of the current edition)
=====================  =====================================================================
``splitting``          Lie-Trotter and Strang splitting of a transformer block (1)
``regularity``         Lipschitz constant and invariant ball of attention (2)
``approximation``      constants of the flow approximation theorem, per-layer weights (3)
``contraction``        contraction of damped attention, uniform-in-time Euler bounds (4)
``hemisphere``         cone collapse on the sphere, Wendel's formula, the circle (5)
``dobrushin``          the mean-field limit's constants and two-sample studies (6)
``gaussian_analysis``  the normaliser criterion and blow-up shapes of Gaussian tokens (7)
``masked``             the causal (masked) mean-field limit (8)
``coupling``           propagation of chaos: particles against mean-field copies (9)
``training``           residual attention networks that train, and their measurements (10)
=====================  =====================================================================
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = (
    "approximation",
    "contraction",
    "coupling",
    "dobrushin",
    "gaussian_analysis",
    "hemisphere",
    "masked",
    "regularity",
    "splitting",
    "training",
)
__all__ = list(_MODULES)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'flowlib.book' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
