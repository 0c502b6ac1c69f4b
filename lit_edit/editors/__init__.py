"""Editors: each a LightningModule with ``edit(batch) -> EditedModel``."""

from lit_edit.editors.base import Editor, EditScores
from lit_edit.editors.cache import EditCache
from lit_edit.editors.edited_model import EditedModel, EditFailedError
from lit_edit.editors.enn import ENN
from lit_edit.editors.finetune import FineTune, NoEdit
from lit_edit.editors.ke import KE
from lit_edit.editors.knowledge_neurons import KnowledgeNeurons
from lit_edit.editors.memit import MEMIT
from lit_edit.editors.mend import MEND
from lit_edit.editors.rome import ROME
from lit_edit.editors.serac import SERAC

__all__ = ["ENN", "KE", "MEMIT", "MEND", "ROME", "SERAC", "EditCache", "EditFailedError", "EditScores", "EditedModel",
           "Editor", "FineTune", "KnowledgeNeurons", "NoEdit"]
