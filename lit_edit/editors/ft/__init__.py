"""Fine-tuning baselines: FT and FT+KL (:class:`FineTune`), and :class:`NoEdit`, the unedited model
(:mod:`~lit_edit.editors.ft.finetune`)."""

from lit_edit.editors.ft.finetune import FineTune, NoEdit

__all__ = ["FineTune", "NoEdit"]
