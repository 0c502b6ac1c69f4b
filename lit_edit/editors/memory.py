"""Moved to :mod:`lit_edit.mechanics.memory` (this path still imports it)."""

import sys

from lit_edit.mechanics import memory as _moved

sys.modules[__name__] = _moved
