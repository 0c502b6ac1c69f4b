"""Moved to :mod:`lit_edit.mechanics.hooks` (this path still imports it)."""

import sys

from lit_edit.mechanics import hooks as _moved

sys.modules[__name__] = _moved
