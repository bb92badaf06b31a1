"""Deprecated alias: this module moved to :mod:`flowlib.book.regularity` in flowlib 0.3 (removed in 0.4)."""

import sys
import warnings

from .book import regularity as _moved

warnings.warn(
    "flowlib.regularity moved to flowlib.book.regularity in flowlib 0.3 (the old name will be removed in 0.4)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
