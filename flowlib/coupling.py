"""Deprecated alias: this module moved to :mod:`flowlib.book.coupling` in flowlib 0.3 (removed in 0.4)."""

import sys
import warnings

from .book import coupling as _moved

warnings.warn(
    "flowlib.coupling moved to flowlib.book.coupling in flowlib 0.3 (the old name will be removed in 0.4)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
