"""Moved to :mod:`lit_edit.mechanics.subject_tokens` (this path still imports it)."""

import sys

from lit_edit.mechanics import subject_tokens as _moved

sys.modules[__name__] = _moved
