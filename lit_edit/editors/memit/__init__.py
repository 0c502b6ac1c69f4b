"""MEMIT (Meng et al. 2023): ROME's update spread over several MLPs, for many facts at once
(:mod:`~lit_edit.editors.memit.memit`)."""

from lit_edit.editors.memit.memit import MEMIT

__all__ = ["MEMIT"]
