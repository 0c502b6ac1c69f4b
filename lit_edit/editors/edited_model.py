"""Moved to :mod:`lit_edit.mechanics.edited_model` (this path still imports it)."""

import sys

from lit_edit.mechanics import edited_model as _moved

sys.modules[__name__] = _moved
