"""Knowledge Neurons (Dai et al., ACL 2022): attribution finds a fact's MLP neurons, whose values are rewritten
(:mod:`~lit_edit.editors.kn.knowledge_neurons`)."""

from lit_edit.editors.kn.knowledge_neurons import KnowledgeNeurons

__all__ = ["KnowledgeNeurons"]
