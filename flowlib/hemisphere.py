"""Deprecated alias: this module moved to :mod:`flowlib.book.hemisphere` in flowlib 0.3 (removed in 0.4)."""

import sys
import warnings

from .book import hemisphere as _moved

warnings.warn(
    "flowlib.hemisphere moved to flowlib.book.hemisphere in flowlib 0.3 (the old name will be removed in 0.4)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
