"""Editors: each a LightningModule with ``edit(batch, on=earlier) -> EditResult``, one folder per method.

* ``ft/`` (FT, FT+KL, NoEdit), ``mend/``, ``enn/``, ``ke/``, ``rome/``, ``memit/``, ``kn/`` (Knowledge Neurons),
  ``serac/`` and ``cache/``: the methods; none imports another;
* :mod:`~lit_edit.editors.base` (:class:`Editor`), :mod:`~lit_edit.editors.locating` (what ROME and MEMIT share),
  :mod:`~lit_edit.editors.routed` (what the memory editors SERAC and the cache share) and
  :mod:`~lit_edit.editors.objective` (the training step of MEND and KE): what methods build on;
* :mod:`~lit_edit.editors.registry`: a short name for each (``"rome"`` -> :class:`ROME`).

The mechanics they use (hooks, model layout, edit results, key-value updates, memories, atomic files) are
:mod:`lit_edit.mechanics`, which imports no editor. The other modules left in this folder are old import paths.
"""

from lit_edit.editors.base import Editor, EditScores
from lit_edit.editors.cache import EditCache
from lit_edit.editors.enn import ENN
from lit_edit.editors.ft import FineTune, NoEdit
from lit_edit.editors.ke import KE
from lit_edit.editors.kn import KnowledgeNeurons
from lit_edit.editors.memit import MEMIT
from lit_edit.editors.mend import MEND
from lit_edit.editors.rome import ROME
from lit_edit.editors.serac import SERAC
from lit_edit.mechanics.edited_model import EditedModel, EditFailedError

__all__ = ["ENN", "KE", "MEMIT", "MEND", "ROME", "SERAC", "EditCache", "EditFailedError", "EditScores", "EditedModel",
           "Editor", "FineTune", "KnowledgeNeurons", "NoEdit"]
