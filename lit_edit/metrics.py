"""Moved to :mod:`lit_edit.evaluation.metrics` (this path still imports it)."""

import sys

from lit_edit.evaluation import metrics as _moved

sys.modules[__name__] = _moved
