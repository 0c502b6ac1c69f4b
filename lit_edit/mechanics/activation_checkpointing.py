"""Activation checkpointing of a base model's transformer blocks that stays correct under functional edits.

Editors run the base model with some weights substituted (``torch.func.functional_call``), and MAML-style
editors differentiate through that twice. Hugging Face's own gradient checkpointing does not fit:

* it checkpoints only in training mode, and the base model is kept in eval mode;
* its recomputation runs during backward, after the substitution has ended, so it recomputes with the
  original weights (non-reentrant mode then fails with "a different number of tensors was saved");
* the reentrant mode of ``torch.utils.checkpoint`` does not support ``torch.autograd.grad`` nor double
  backward, which the second-order inner loop needs.

So each block's forward is wrapped here in *non-reentrant* ``torch.utils.checkpoint``, which supports
``autograd.grad`` and higher-order gradients, and the wrapper captures the tensors the block is using at
forward time (substituted ones included) and substitutes them again for the recomputation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

_MARK = "_lit_edit_checkpointed"


def block_class_names(model: nn.Module) -> list[str]:
    """The model's transformer block classes, as Hugging Face models declare them (``_no_split_modules``)."""
    return list(getattr(model, "_no_split_modules", None) or [])


def checkpoint_blocks(model: nn.Module, block_classes: Sequence[str] | None = None) -> list[str]:
    """Checkpoint the activations of every block of ``model`` while gradients are recorded; return the blocks' names.

    ``block_classes`` names the block classes (default: the model's ``_no_split_modules``). Idempotent.
    """
    classes = set(block_classes or block_class_names(model))
    if not classes:
        raise ValueError(f"{type(model).__name__} declares no block classes (`_no_split_modules`); "
                         "name them with `block_classes`")
    names = []
    for name, module in model.named_modules():
        if type(module).__name__ in classes:
            if not getattr(module, _MARK, False):
                module.forward = _checkpointed_forward(module, module.forward)
                setattr(module, _MARK, True)
            names.append(name)
    if not names:
        raise ValueError(f"no module of {type(model).__name__} is of the block classes {sorted(classes)}")
    return names


def _checkpointed_forward(block: nn.Module, original: Callable[..., Any]) -> Callable[..., Any]:
    names = [name for name, _ in block.named_parameters()]
    current = {name: attrgetter(name) for name in names}
    recomputing = False

    def forward(*args: Any, **kwargs: Any) -> Any:
        if recomputing or not torch.is_grad_enabled():
            return original(*args, **kwargs)
        # What the block computes with right now: its own parameters or the edit's substitutes for them.
        tensors = {name: get(block) for name, get in current.items()}

        def run(*args: Any, **kwargs: Any) -> Any:
            nonlocal recomputing
            recomputing = True
            try:
                return functional_call(block, tensors, args, kwargs)
            finally:
                recomputing = False

        return checkpoint(run, *args, use_reentrant=False, **kwargs)

    return forward
