"""Moved to :mod:`lit_edit.editors.kn.knowledge_neurons` (this path still imports it)."""

import sys

from lit_edit.editors.kn import knowledge_neurons as _moved

sys.modules[__name__] = _moved
