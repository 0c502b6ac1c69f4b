"""ENN (Sinitsin et al., ICLR 2020): meta-learned weights and inner learning rates for a few fine-tuning steps
(:mod:`~lit_edit.editors.enn.enn`)."""

from lit_edit.editors.enn.enn import ENN

__all__ = ["ENN"]
