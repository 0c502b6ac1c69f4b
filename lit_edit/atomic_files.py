"""Moved to :mod:`lit_edit.mechanics.atomic_files` (this path still imports it)."""

import sys

from lit_edit.mechanics import atomic_files as _moved

sys.modules[__name__] = _moved
