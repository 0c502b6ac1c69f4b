"""A base model seen through replacement values for some of its weights: the result of an edit.

Edits are functional: the base model's own tensors are never written, so a failed or discarded
edit cannot leave a trace in it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call
from transformers import PreTrainedModel

from lit_edit.data.batch import IGNORE_INDEX, TokenizedExamples


def aligned_logits(model: PreTrainedModel, examples: TokenizedExamples, kind: str,
                   params: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Run ``model`` (with ``params`` substituted, if given) and return logits aligned with labels.

    Causal LMs predict token t+1 at position t, so logits and labels are shifted against each other;
    seq2seq LMs produce decoder logits already aligned with the labels.
    """
    # No key-value cache: nothing is generated here, and a cache that layers append to would break recomputation
    # under activation checkpointing.
    kwargs: dict[str, Any] = {"input_ids": examples.input_ids, "attention_mask": examples.attention_mask,
                              "use_cache": False}
    if kind == "seq2seq":
        kwargs["labels"] = examples.labels
    output = functional_call(model, params, args=(), kwargs=kwargs, strict=False) if params else model(**kwargs)
    logits = output.logits
    if kind == "causal":
        return logits[:, :-1], examples.labels[:, 1:]
    return logits, examples.labels


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


class EditedModel:
    """The base model with some weights replaced by edited values."""

    def __init__(self, base: PreTrainedModel, kind: str, params: dict[str, Tensor]) -> None:
        for name, value in params.items():
            if not torch.isfinite(value).all():
                raise EditFailedError(f"the edit produced non-finite values for {name}; the model was left unchanged")
        self.base = base
        self.kind = kind
        self.params = params

    @property
    def changes_outputs(self) -> bool:
        """Whether any output can differ from the base model's (scoring skips the post-edit forward otherwise)."""
        return bool(self.params)

    def logits(self, examples: TokenizedExamples) -> tuple[Tensor, Tensor]:
        return aligned_logits(self.base, examples, self.kind, self.params)

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

    def materialize(self) -> PreTrainedModel:
        """A standalone copy of the edited model (e.g. to save as a Hugging Face checkpoint)."""
        model = copy.deepcopy(self.base)
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.params.items():
                named[name].copy_(value)
        return model
