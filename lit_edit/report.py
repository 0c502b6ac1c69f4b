"""Moved to :mod:`lit_edit.evaluation.report` (this path still imports it)."""

import sys

from lit_edit.evaluation import report as _moved

sys.modules[__name__] = _moved
