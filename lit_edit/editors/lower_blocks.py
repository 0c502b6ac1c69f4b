"""Moved to :mod:`lit_edit.mechanics.lower_blocks` (this path still imports it)."""

import sys

from lit_edit.mechanics import lower_blocks as _moved

sys.modules[__name__] = _moved
