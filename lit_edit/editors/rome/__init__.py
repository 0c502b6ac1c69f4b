"""ROME (Meng et al. 2022): a rank-one key-value update of one MLP (:mod:`~lit_edit.editors.rome.rome`); what it
shares with MEMIT is :mod:`lit_edit.editors.locating`. This package stands where the module
``lit_edit/editors/rome.py`` was and exports its names."""

from lit_edit.editors.locating import ContextPrefixes, LocatingEditor, validate_statistics
from lit_edit.editors.rome.rome import ROME

__all__ = ["ContextPrefixes", "LocatingEditor", "ROME", "validate_statistics"]
