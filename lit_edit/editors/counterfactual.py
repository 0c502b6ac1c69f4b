"""Moved to :mod:`lit_edit.editors.serac.counterfactual` (this path still imports it)."""

import sys

from lit_edit.editors.serac import counterfactual as _moved

sys.modules[__name__] = _moved
