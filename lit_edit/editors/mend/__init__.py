"""MEND (Mitchell et al., ICLR 2022): a trained network maps an edit's rank-one gradients to a weight update
(:mod:`~lit_edit.editors.mend.mend`). This package stands where the module ``lit_edit/editors/mend.py`` was and
exports its names."""

from lit_edit.editors.mend.mend import MEND, MENDNetwork, RunningNorm
from lit_edit.mechanics.hooks import ActivationCapture

__all__ = ["ActivationCapture", "MEND", "MENDNetwork", "RunningNorm"]
