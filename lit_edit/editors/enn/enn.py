"""ENN: Editable Neural Networks (Sinitsin et al., ICLR 2020).

MAML applied to editing: the editable weights themselves are meta-trained so that ``inner_steps`` plain
gradient steps on an edit, with learned per-weight learning rates, make an edit that holds on the in-scope
inputs and stays local. The outer loss differentiates through the inner loop (second order, or first order
with ``first_order``) and adds a KL to the original model so that meta-training does not drift the model.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from lit_edit.data.batch import EditBatch
from lit_edit.editors.base import Editor
from lit_edit.evaluation.metrics import edit_success
from lit_edit.mechanics.edit_result import composed
from lit_edit.mechanics.edited_model import (
    EditedModel,
    EditFailedError,
    aligned_logits,
    locality_kl,
    nll_loss,
    prediction_mask,
)
from lit_edit.mechanics.parameters import ParameterBank
from lit_edit.mechanics.schedule import LrSchedule, check_schedule, scheduled
from lit_edit.mechanics.settings import require_at_least, require_non_negative, require_positive
from lit_edit.models import ModelSpec


class ENN(Editor):
    """Meta-trained editable weights plus learned inner learning rates; an edit is ``inner_steps`` SGD steps."""

    supports_zero3 = True
    #: None: ENN's trained weights have the editable weights' shapes, which its checkpoints record anyway.
    checkpoint_shape_hparams = ()

    def __init__(self, model: ModelSpec | None = None, inner_steps: int = 1, inner_lr: float = 1.0e-3,
                 first_order: bool = False, lr: float = 1.0e-5, lr_lr: float = 1.0e-4, c_edit: float = 1.0,
                 c_loc: float = 1.0, c_base: float = 1.0, checkpoint: str | None = None, max_length: int = 128,
                 gradient_checkpointing: bool = False, warmup_steps: int = 0,
                 lr_schedule: LrSchedule = "constant") -> None:
        """
        Args:
            inner_steps: gradient steps of one edit, in training and at test time alike.
            inner_lr: initial value of the learned learning rate of each editable weight.
            first_order: do not differentiate through the inner gradients (first-order MAML; cheaper).
            lr, lr_lr: outer learning rates of the meta-trained weights and of the inner learning rates.
            c_edit, c_loc, c_base: weights of the in-scope NLL after the edit, of the KL between the model
                before and after the edit on out-of-scope inputs, and of the KL from the original model to
                the meta-trained one on the same inputs.
            warmup_steps, lr_schedule: the learning rate rises linearly over ``warmup_steps`` optimizer steps, then
                stays (``constant``) or decays to 0 at the run's last step (``linear``, ``cosine``;
                :mod:`lit_edit.mechanics.schedule`).
            checkpoint: a training checkpoint to start from (it holds only the meta-trained weights and rates).
            gradient_checkpointing: recompute the base model's block activations in backward (see ``Editor``).
        """
        owner = type(self).__name__
        require_at_least(owner, "inner_steps", inner_steps, 1)
        check_schedule(owner, warmup_steps, lr_schedule)
        for name, value in (("inner_lr", inner_lr), ("lr", lr), ("c_edit", c_edit)):
            require_positive(owner, name, value)
        for name, value in (("lr_lr", lr_lr), ("c_loc", c_loc), ("c_base", c_base)):
            require_non_negative(owner, name, value)
        model = model or ModelSpec()
        if not first_order and model.attn_implementation is None:
            # The second-order inner loop differentiates through attention twice; fused SDPA kernels cannot.
            model = replace(model, attn_implementation="eager")
        super().__init__(model, max_length, gradient_checkpointing)
        self.save_hyperparameters(ignore=["checkpoint"])
        self.inner_steps, self.first_order = inner_steps, first_order
        self.lr, self.lr_lr = lr, lr_lr
        self.c_edit, self.c_loc, self.c_base = c_edit, c_loc, c_base
        # The meta-trained copy of the editable weights; the base model keeps the original ones (for c_base).
        self.weights = ParameterBank(self.base_params().values())
        self.inner_lrs = ParameterBank([torch.full((len(self.editable_names),), float(inner_lr))])
        if checkpoint:
            self.load_editor(checkpoint)

    def meta_params(self) -> dict[str, Tensor]:
        """The meta-trained weights by base-model name: the model that ENN edits."""
        return dict(zip(self.editable_names, self.weights(), strict=True))

    def edit(self, batch: EditBatch, on: EditedModel | None = None) -> EditedModel:
        """``inner_steps`` gradient steps on the edit; differentiable in training, plain at test time. On top of
        ``on`` (an earlier ENN edit) the steps start from its weights, not from the meta-trained ones, which ENN
        reads instead of the base model's: writing ``on`` into the base model would not carry it over."""
        training = self.training and torch.is_grad_enabled()
        params = self.meta_params()
        if on is not None:
            params = {name: on.params.get(name, value) for name, value in params.items()}
        (rates,) = self.inner_lrs()
        if not training:
            params = {name: p.detach().requires_grad_(True) for name, p in params.items()}
            rates = rates.detach()
        for step in range(self.inner_steps):
            loss = nll_loss(*aligned_logits(self.model, batch.edit, self.kind, params, labelled_only=True))
            if not torch.isfinite(loss):
                raise EditFailedError(f"ENN: inner step {step} loss is {loss.item()}; the model was left unchanged")
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=training and not self.first_order)
            params = {name: p - rate * g for (name, p), g, rate in zip(params.items(), grads, rates, strict=True)}
        if not training:
            params = {name: p.detach() for name, p in params.items()}
        return composed(on, EditedModel(self.model, self.kind, params))

    def training_step(self, batch: EditBatch, batch_idx: int) -> Tensor | None:
        try:
            edited = self.edit(batch)
        except EditFailedError:
            return self.skip_step()
        post_in, in_labels = edited.logits(batch.in_scope)
        edit_loss = nll_loss(post_in, in_labels)
        out, mask = batch.out_of_scope, prediction_mask(batch.out_of_scope, self.kind)
        with torch.no_grad():
            original, _ = self.logits(out)
        unedited, _ = aligned_logits(self.model, out, self.kind, self.meta_params())
        post_out, _ = edited.logits(out)
        loc_loss = locality_kl(unedited, post_out, mask)
        base_loss = locality_kl(original, unedited, mask)
        loss = self.c_edit * edit_loss + self.c_loc * loc_loss + self.c_base * base_loss
        if not torch.isfinite(loss):
            return self.skip_step()
        self.log_dict({"train/loss": loss, "train/edit_loss": edit_loss, "train/loc_loss": loc_loss,
                       "train/base_loss": base_loss, "train/es": edit_success(post_in.detach(), in_labels)},
                      prog_bar=True, batch_size=len(batch))
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam([
            {"params": list(self.weights.parameters()), "lr": self.lr},
            {"params": list(self.inner_lrs.parameters()), "lr": self.lr_lr},
        ])
        return scheduled(optimizer, self._trainer, self.hparams.warmup_steps, self.hparams.lr_schedule)
