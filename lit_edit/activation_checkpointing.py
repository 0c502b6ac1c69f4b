"""Moved to :mod:`lit_edit.mechanics.activation_checkpointing` (this path still imports it)."""

import sys

from lit_edit.mechanics import activation_checkpointing as _moved

sys.modules[__name__] = _moved
