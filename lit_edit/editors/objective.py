"""The learned editors' training step (MEND, KE): L = c_edit · NLL(in-scope | edited) + c_loc · KL(pre ‖ post on
out-of-scope). ENN adds a third term and keeps its own."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_edit.data.batch import EditBatch
from lit_edit.editors.base import Editor
from lit_edit.editors.edited_model import EditFailedError, locality_kl, nll_loss, prediction_mask
from lit_edit.metrics import edit_success


def edit_and_locality_step(editor: Editor, batch: EditBatch, c_edit: float, c_loc: float) -> Tensor | None:
    """Edit with ``batch``, return the weighted loss (logged with its parts), or skip the step if the edit or the
    loss is not finite."""
    try:
        edited = editor.edit(batch)
    except EditFailedError:
        return editor.skip_step()
    post_in, in_labels = edited.logits(batch.in_scope, labelled_only=True)  # the NLL reads the targets only
    edit_loss = nll_loss(post_in, in_labels)
    lower = editor.lower_blocks
    if lower is None:
        with torch.no_grad():
            pre_out, _ = editor.logits(batch.out_of_scope)
        post_out, _ = edited.logits(batch.out_of_scope)
    else:  # the blocks below the edited ones run once for both passes over the out-of-scope inputs
        with torch.no_grad(), lower.recorded() as below:
            pre_out, _ = editor.logits(batch.out_of_scope)
        post_out, _ = lower.second_pass(below, lambda: edited.logits(batch.out_of_scope))
    loc_loss = locality_kl(pre_out, post_out, prediction_mask(batch.out_of_scope, editor.kind))
    loss = c_edit * edit_loss + c_loc * loc_loss
    if not torch.isfinite(loss):
        return editor.skip_step()
    editor.log_dict({"train/loss": loss, "train/edit_loss": edit_loss, "train/loc_loss": loc_loss,
                     "train/es": edit_success(post_in.detach(), in_labels)}, prog_bar=True, batch_size=len(batch))
    return loss
