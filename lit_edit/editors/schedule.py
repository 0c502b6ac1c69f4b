"""Moved to :mod:`lit_edit.mechanics.schedule` (this path still imports it)."""

import sys

from lit_edit.mechanics import schedule as _moved

sys.modules[__name__] = _moved
