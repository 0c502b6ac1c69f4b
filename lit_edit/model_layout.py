"""Moved to :mod:`lit_edit.mechanics.model_layout` (this path still imports it)."""

import sys

from lit_edit.mechanics import model_layout as _moved

sys.modules[__name__] = _moved
