"""KE, KnowledgeEditor (De Cao et al., EMNLP 2021): a hypernetwork conditioned on the edit gates its gradient
(:mod:`~lit_edit.editors.ke.ke`). This package stands where the module ``lit_edit/editors/ke.py`` was and exports
its names."""

from lit_edit.editors.ke.ke import KE, ConditionEncoder, GatedUpdate, greedy_answer, per_example_nll, split_edit

__all__ = ["ConditionEncoder", "GatedUpdate", "KE", "greedy_answer", "per_example_nll", "split_edit"]
