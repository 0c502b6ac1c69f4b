"""Moved to :mod:`lit_edit.editors.ft.finetune` (this path still imports it)."""

import sys

from lit_edit.editors.ft import finetune as _moved

sys.modules[__name__] = _moved
