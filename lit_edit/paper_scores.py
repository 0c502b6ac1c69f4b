"""Moved to :mod:`lit_edit.evaluation.paper_scores` (this path still imports it)."""

import sys

from lit_edit.evaluation import paper_scores as _moved

sys.modules[__name__] = _moved
