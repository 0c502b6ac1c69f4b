"""SERAC (Mitchell et al., ICML 2022): an edit memory, a scope classifier
(:mod:`~lit_edit.editors.serac.scope_classifier`) and a counterfactual model
(:mod:`~lit_edit.editors.serac.counterfactual`) route queries around the frozen base model
(:mod:`~lit_edit.editors.serac.serac`). This package stands where the module ``lit_edit/editors/serac.py`` was and
exports its names."""

from lit_edit.editors.serac.serac import SERAC, SeracRouter

__all__ = ["SERAC", "SeracRouter"]
