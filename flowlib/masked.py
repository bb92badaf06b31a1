"""Deprecated alias: this module moved to :mod:`flowlib.book.masked` in flowlib 0.3 (removed in 0.4)."""

import sys
import warnings

from .book import masked as _moved

warnings.warn(
    "flowlib.masked moved to flowlib.book.masked in flowlib 0.3 (the old name will be removed in 0.4)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
