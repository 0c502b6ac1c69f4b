"""Moved to :mod:`lit_edit.editors.serac.scope_classifier` (this path still imports it)."""

import sys

from lit_edit.editors.serac import scope_classifier as _moved

sys.modules[__name__] = _moved
