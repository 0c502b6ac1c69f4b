"""Moved to :mod:`lit_edit.mechanics.parameters` (this path still imports it)."""

import sys

from lit_edit.mechanics import parameters as _moved

sys.modules[__name__] = _moved
