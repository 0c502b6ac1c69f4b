"""lit_edit: model editors as PyTorch Lightning modules. ``lit_edit.load_editor("rome", model=...)`` is the Python
API (:mod:`lit_edit.api`); it is imported on first use, so that ``import lit_edit`` (and ``lit-edit --help``) loads
no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lit_edit.api import Edited, LoadedEditor, load_editor

__all__ = ["Edited", "LoadedEditor", "load_editor"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lit_edit import api

        return getattr(api, name)
    raise AttributeError(f"module 'lit_edit' has no attribute {name!r}")
