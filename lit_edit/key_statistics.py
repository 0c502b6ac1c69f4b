"""Moved to :mod:`lit_edit.mechanics.key_statistics` (this path still imports it)."""

import sys

from lit_edit.mechanics import key_statistics as _moved

sys.modules[__name__] = _moved
