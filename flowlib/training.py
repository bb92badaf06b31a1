"""Deprecated alias: this module moved to :mod:`flowlib.book.training` in flowlib 0.3 (removed in 0.4)."""

import sys
import warnings

from .book import training as _moved

warnings.warn(
    "flowlib.training moved to flowlib.book.training in flowlib 0.3 (the old name will be removed in 0.4)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
