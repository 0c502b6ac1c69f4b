"""Moved to :mod:`lit_edit.mechanics.settings` (this path still imports it)."""

import sys

from lit_edit.mechanics import settings as _moved

sys.modules[__name__] = _moved
