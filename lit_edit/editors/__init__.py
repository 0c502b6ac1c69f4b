"""Editors: each a LightningModule with ``edit(batch) -> EditedModel``."""

from lit_edit.editors.base import Editor, EditScores
from lit_edit.editors.edited_model import EditedModel, EditFailedError
from lit_edit.editors.enn import ENN
from lit_edit.editors.finetune import FineTune, NoEdit
from lit_edit.editors.knowledge_neurons import KnowledgeNeurons
from lit_edit.editors.mend import MEND

__all__ = ["ENN", "MEND", "EditFailedError", "EditScores", "EditedModel", "Editor", "FineTune", "KnowledgeNeurons", "NoEdit"]
