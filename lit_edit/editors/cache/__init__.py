"""The edit cache (MEND, appendix G): a nearest-neighbour memory over the base model's hidden states
(:mod:`~lit_edit.editors.cache.cache`). This package stands where the module ``lit_edit/editors/cache.py`` was and
exports its names."""

from lit_edit.editors.cache.cache import CACHED_MARGIN, CacheRouter, EditCache

__all__ = ["CACHED_MARGIN", "CacheRouter", "EditCache"]
