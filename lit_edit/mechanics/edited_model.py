"""A base model seen through replacement values for some of its weights: the result of a weight editor's edit.

Edits are functional: the base model's own tensors are never written for good, so a failed or discarded
edit cannot leave a trace in it. A weight edit is saved as a safetensors file of the weights it replaces.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.func import functional_call
from transformers import PreTrainedModel

from lit_edit.data.batch import IGNORE_INDEX, TokenizedExamples
from lit_edit.errors import UserInputError
from lit_edit.mechanics.atomic_files import save_file_atomically
from lit_edit.mechanics.edit_result import EditResult
from lit_edit.mechanics.prefix_cache import StackedPrefixes

#: What a weight edit's safetensors file says it is, in its metadata.
WEIGHT_EDIT_FORMAT = "lit-edit weight edit 1"


def aligned_logits(model: PreTrainedModel, examples: TokenizedExamples, kind: str,
                   params: dict[str, Tensor] | None = None, labelled_only: bool = False,
                   past: StackedPrefixes | None = None) -> tuple[Tensor, Tensor]:
    """Run ``model`` (with ``params`` substituted, if given) and return logits aligned with labels.

    Causal LMs predict token t+1 at position t, so logits and labels are shifted against each other;
    seq2seq LMs produce decoder logits already aligned with the labels. A classifier is a one-position model whose
    vocabulary is its classes: logits ``[batch, 1, classes]`` against class-index labels ``[batch, 1]``, so every
    metric of :mod:`lit_edit.evaluation.metrics` scores it unchanged. ``labelled_only``: return only the
    positions where some row has a label, and have a causal LM compute no others (its ``logits_to_keep``);
    a loss on the targets needs nothing else, and the LM head over a large vocabulary at every prompt token
    is about a fifth of a small model's work. Models without ``logits_to_keep`` still compute every position.
    ``past``: each row continues after these states (a causal LM's rows cut where nothing before can change).
    """
    # No key-value cache of its own: nothing is generated here, and a cache that layers append to would break
    # recomputation under activation checkpointing.
    kwargs: dict[str, Any] = {"input_ids": examples.input_ids, "attention_mask": examples.attention_mask,
                              "use_cache": False}
    if past is not None:
        kwargs.update(past.continuation(model.config, examples.attention_mask))
    labels = aligned_labels(examples, kind)
    if kind == "classifier":
        kwargs.pop("use_cache")  # encoders take no such argument
        output = functional_call(model, params, args=(), kwargs=kwargs, strict=False) if params else model(**kwargs)
        return output.logits[:, None], labels
    keep = (labels != IGNORE_INDEX).any(0).nonzero().squeeze(1) if labelled_only else None
    if kind == "seq2seq":
        kwargs["labels"] = examples.labels
    elif keep is not None and _takes_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep  # position t predicts token t + 1
    output = functional_call(model, params, args=(), kwargs=kwargs, strict=False) if params else model(**kwargs)
    logits = output.logits
    if "logits_to_keep" in kwargs:
        return logits, labels[:, keep]
    if kind == "causal":
        logits = logits[:, :-1]
    return (logits, labels) if keep is None else (logits[:, keep], labels[:, keep])


def aligned_labels(examples: TokenizedExamples, kind: str) -> Tensor:
    """The labels that :func:`aligned_logits` returns for ``examples`` (a causal LM's shifted by one)."""
    return examples.labels[:, 1:] if kind == "causal" else examples.labels


def _takes_logits_to_keep(model: PreTrainedModel) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def at_least_float32(x: Tensor) -> Tensor:
    """Losses in float32 for half-precision models, in float64 for float64 ones (gradient checks)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def nll_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean negative log-likelihood of the labelled tokens."""
    return F.cross_entropy(at_least_float32(logits).reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def locality_kl(pre_logits: Tensor, post_logits: Tensor, mask: Tensor) -> Tensor:
    """KL(pre || post) of the next-token distributions, averaged over the positions in ``mask``."""
    pre = F.log_softmax(at_least_float32(pre_logits), dim=-1)
    post = F.log_softmax(at_least_float32(post_logits), dim=-1)
    per_position = (pre.exp() * (pre - post)).sum(-1)
    mask = mask.to(per_position.dtype)
    return (per_position * mask).sum() / mask.sum().clamp_min(1.0)


def prediction_mask(examples: TokenizedExamples, kind: str) -> Tensor:
    """Positions whose predictions exist and are not padding, aligned with :func:`aligned_logits`."""
    if kind == "causal":
        return examples.attention_mask[:, 1:]
    return (examples.labels != IGNORE_INDEX).long()


class EditFailedError(RuntimeError):
    """An edit could not be made (e.g. a non-finite update); the base model is unchanged."""


class EditRefusedError(EditFailedError, UserInputError, ValueError):
    """An edit its editor cannot make from what the record says (no subject, a subject not in the prompt, a prompt
    too long): refused before anything changes and recorded as a failed edit like any other; where it is not caught
    as one, the CLIs report it as the user's mistake (a :class:`~lit_edit.errors.UserInputError`, a ValueError)."""


class EditFileError(UserInputError, ValueError):
    """A saved edit that cannot be used: unreadable, or for weights this base model does not have; names the file."""


class EditedModel(EditResult):
    """The base model with some weights replaced by edited values."""

    file_suffix: ClassVar[str] = ".safetensors"

    def __init__(self, base: PreTrainedModel, kind: str, params: dict[str, Tensor]) -> None:
        for name, value in params.items():
            if not torch.isfinite(value).all():
                raise EditFailedError(f"the edit produced non-finite values for {name}; the model was left unchanged")
        self.base = base
        self.kind = kind
        self.params = params

    @property
    def changes_outputs(self) -> bool:
        return bool(self.params)

    def logits(self, examples: TokenizedExamples, labelled_only: bool = False) -> tuple[Tensor, Tensor]:
        """Logits aligned with labels (:func:`aligned_logits`; ``labelled_only``: at labelled positions only)."""
        return aligned_logits(self.base, examples, self.kind, self.params, labelled_only=labelled_only)

    @contextmanager
    def applied(self) -> Iterator[PreTrainedModel]:
        """Write the edit into the base model for code that needs a plain module (``generate``); always restored."""
        named = dict(self.base.named_parameters())
        saved = {name: named[name].detach().clone() for name in self.params}
        try:
            with torch.no_grad():
                for name, value in self.params.items():
                    named[name].copy_(value)
            yield self.base
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    named[name].copy_(value)

    def then(self, later: EditResult) -> EditedModel:
        """Where both replace a weight, ``later``'s value (computed with this edit applied) is the one kept."""
        if not isinstance(later, EditedModel) or later.base is not self.base:
            raise TypeError(f"a weight edit composes with a weight edit of the same base model, not with "
                            f"{type(later).__name__}: make each edit with the same editor (edit(batch, on=...))")
        return EditedModel(self.base, self.kind, {**self.params, **later.params})

    def detached(self) -> EditedModel:
        return EditedModel(self.base, self.kind, {name: value.detach() for name, value in self.params.items()})

    def save(self, path: str | Path) -> Path:
        """A safetensors file of the replaced weights, written to a temporary name and renamed over ``path``."""
        tensors = {name: value.detach().to("cpu", copy=True).contiguous() for name, value in self.params.items()}
        metadata = {"format": WEIGHT_EDIT_FORMAT}
        return save_file_atomically(path, lambda staged: save_file(tensors, staged, metadata=metadata))

    @classmethod
    def load(cls, path: str | Path, base: PreTrainedModel, kind: str) -> EditedModel:
        """A weight edit written by :meth:`save`, on ``base``; :class:`EditFileError` names a file that is not one, or
        that replaces weights ``base`` lacks or has in other shapes."""
        path = Path(path)
        if not path.is_file():
            raise EditFileError(f"{path}: no saved edit there")
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise EditFileError(f"{path}: not a saved weight edit (a safetensors file): {error}") from None
        named = dict(base.named_parameters())
        unknown = sorted(name for name in tensors if name not in named)
        if unknown:
            raise EditFileError(f"{path} replaces weights this base model does not have: {unknown[:5]}; it was saved "
                                "for another model")
        wrong = sorted(name for name, value in tensors.items() if value.shape != named[name].shape)
        if wrong:
            raise EditFileError(f"{path} holds weights of other shapes than this base model's: {wrong[:5]}; it was "
                                "saved for another model")
        return cls(base, kind, {name: value.to(named[name].device, named[name].dtype) for name, value in tensors.items()})

    def materialize(self) -> PreTrainedModel:
        """A standalone copy of the edited model (e.g. to save as a Hugging Face checkpoint)."""
        model = copy.deepcopy(self.base)
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.params.items():
                named[name].copy_(value)
        return model
