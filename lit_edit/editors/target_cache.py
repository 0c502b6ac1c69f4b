"""Moved to :mod:`lit_edit.mechanics.target_cache` (this path still imports it)."""

import sys

from lit_edit.mechanics import target_cache as _moved

sys.modules[__name__] = _moved
