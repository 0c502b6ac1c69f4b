"""The one contract of what an edit makes, for weight editors and memory editors alike.

An editor's ``edit(batch, on=previous)`` returns an :class:`EditResult`: the base model seen through new weights
(:class:`~lit_edit.mechanics.edited_model.EditedModel`) or routed through a memory of edits
(:class:`~lit_edit.editors.routed.RoutedModel`). Both are used the same way: their logits are scored, they are
``applied()`` for code that needs a plain module, they are composed (``then``: the whole history of a sequential run
is one result), saved (``save``) and read back (``Editor.load_edit``). Only ``materialize`` differs: a memory has no
weights to write into a Hugging Face checkpoint, and says so.

Sequential editing needs nothing else: ``edit(batch, on=result_so_far)`` makes the new edits on top of the earlier
ones and returns their composition, so no caller has to know which kind of editor it holds.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from torch import Tensor, nn
    from transformers import PreTrainedModel

    from lit_edit.data.batch import EditBatch, TokenizedExamples


class EditResult(ABC):
    """What an edit made, on a base model that it never writes to for good."""

    #: How :meth:`save` names what it writes (a caller picking a file name adds it).
    file_suffix: ClassVar[str]
    base: PreTrainedModel
    kind: str
    #: The base model's weights this edit replaces, by name (a memory edit replaces none).
    params: dict[str, Tensor]

    @property
    @abstractmethod
    def changes_outputs(self) -> bool:
        """Whether any output can differ from the base model's (scoring skips the post-edit forward otherwise)."""

    @abstractmethod
    def logits(self, examples: TokenizedExamples, labelled_only: bool = False) -> tuple[Tensor, Tensor]:
        """Logits aligned with labels, as :func:`~lit_edit.mechanics.edited_model.aligned_logits` gives them."""

    @abstractmethod
    def applied(self) -> AbstractContextManager[nn.Module]:
        """A module that answers as the edited model (``generate``), for the ``with`` block only."""

    @abstractmethod
    def then(self, later: EditResult) -> EditResult:
        """This edit followed by ``later``, made on top of it (``edit(batch, on=self)``), as one result."""

    @abstractmethod
    def detached(self) -> EditResult:
        """The same edit holding no autograd graph: what is kept between the batches of a sequential run."""

    @abstractmethod
    def save(self, path: str | Path) -> Path:
        """Write the edit to ``path`` (whole or not at all); ``Editor.load_edit`` reads it back."""

    @abstractmethod
    def materialize(self) -> PreTrainedModel:
        """A standalone copy of the edited model, to save as a Hugging Face checkpoint."""


def composed(on: EditResult | None, new: EditResult) -> EditResult:
    """``new`` (made on top of ``on``) composed with ``on``: every edit so far as one result."""
    return new if on is None else on.then(new)


Edit = TypeVar("Edit", bound=Callable[..., Any])


def builds_on_weights(edit: Edit) -> Edit:
    """For an editor whose edit reads the base model's current weights: ``edit(batch, on=previous)`` makes the
    edit with ``previous`` written into the base model (restored afterwards, whatever happens) and returns it
    composed with ``previous``. The decorated method then makes one edit on the model it finds; ``on`` never
    reaches it."""

    @functools.wraps(edit)
    def edit_on(editor: Any, batch: EditBatch, on: EditResult | None = None) -> EditResult:
        if on is None:
            return edit(editor, batch)
        with on.applied():
            made = edit(editor, batch)
        return on.then(made)

    return edit_on  # type: ignore[return-value]
