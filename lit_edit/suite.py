"""Moved to :mod:`lit_edit.evaluation.suite` (this path still imports it)."""

import sys

from lit_edit.evaluation import suite as _moved

sys.modules[__name__] = _moved
