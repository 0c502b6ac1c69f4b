"""Moved to :mod:`lit_edit.mechanics.edit_result` (this path still imports it)."""

import sys

from lit_edit.mechanics import edit_result as _moved

sys.modules[__name__] = _moved
