"""Moved to :mod:`lit_edit.mechanics.prefix_cache` (this path still imports it)."""

import sys

from lit_edit.mechanics import prefix_cache as _moved

sys.modules[__name__] = _moved
