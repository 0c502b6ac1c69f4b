"""The learned editors' training step (MEND, KE): L = c_edit · NLL(in-scope | edited) + c_loc · KL(pre ‖ post on
out-of-scope). ENN adds a third term and keeps its own.

The step is written so that the frozen blocks below the edited weights run once per input
(:mod:`lit_edit.mechanics.lower_blocks`): the unedited out-of-scope pass records them for the edited one, and, for an
editor whose edit depends on nothing but its edit examples' gradients (MEND), the edit's own pass is made over every
row the step reads (labels on the edit prompts' rows only) and records them for all the other passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor
from torch.profiler import record_function

from lit_edit.data.batch import IGNORE_INDEX, UNRELATED, EditBatch, TokenizedExamples
from lit_edit.editors.base import Editor
from lit_edit.evaluation.metrics import edit_success
from lit_edit.mechanics.continuation_locality import Continuations, continuation_kl
from lit_edit.mechanics.edited_model import EditFailedError, locality_kl, nll_loss, prediction_mask
from lit_edit.mechanics.lower_blocks import LowerBlocks, Recording

#: The parts of a training step, as ``torch.profiler`` sees them (scripts/benchmark_training_step.py reads them).
STEP_PARTS = {"edit": "lit_edit: edit", "in_scope": "lit_edit: in-scope pass, edited",
              "unedited_out": "lit_edit: out-of-scope pass, unedited", "edited_out": "lit_edit: out-of-scope pass, edited",
              "continuation": "lit_edit: after-target passes"}


def _through(lower: LowerBlocks | None, recording: Recording | None, full_pass: Callable[[], tuple[Tensor, Tensor]],
             kind: str) -> tuple[Tensor, Tensor]:
    """``full_pass()``, with the lower blocks replayed from ``recording`` where there is one."""
    return full_pass() if lower is None or recording is None else lower.second_pass(recording, full_pass, kind)


def right_padded_stack(first: TokenizedExamples, second: TokenizedExamples) -> TokenizedExamples:
    """Both batches' rows in one, right-padded to the longer (padding masked and unlabelled)."""
    length = max(first.input_ids.shape[1], second.input_ids.shape[1])

    def padded(values: Tensor, fill: int) -> Tensor:
        return torch.nn.functional.pad(values, (0, length - values.shape[1]), value=fill)

    return TokenizedExamples(torch.cat([padded(first.input_ids, 0), padded(second.input_ids, 0)]),
                             torch.cat([padded(first.attention_mask, 0), padded(second.attention_mask, 0)]),
                             torch.cat([padded(first.labels, IGNORE_INDEX), padded(second.labels, IGNORE_INDEX)]))


def edit_over_every_row(batch: EditBatch) -> EditBatch | None:
    """``batch`` with its edit examples read from the in-scope rows that are the edit prompts themselves, followed by
    the other in-scope rows and the out-of-scope rows, unlabelled; ``None`` when the in-scope rows are not the edit
    examples token for token.

    The edit's loss, hence its gradients, are unchanged: the unlabelled rows add nothing to the loss, and right
    padding changes no real position. Its one pass then computes the lower blocks of every row the step reads."""
    edit, in_scope = batch.edit, batch.in_scope
    rows = (~batch.in_scope_is_paraphrase.bool()).nonzero().squeeze(1)
    if len(rows) != len(edit):
        return None
    for edit_row, row in enumerate(rows.tolist()):
        real = edit.attention_mask[edit_row].bool()
        other = in_scope.attention_mask[row].bool()
        if int(real.sum()) != int(other.sum()) or not (
                torch.equal(edit.input_ids[edit_row][real], in_scope.input_ids[row][other])
                and torch.equal(edit.labels[edit_row][real], in_scope.labels[row][other])):
            return None
    labels = torch.full_like(in_scope.labels, IGNORE_INDEX)
    labels[rows] = in_scope.labels[rows]
    out = batch.out_of_scope
    unlabelled_out = TokenizedExamples(out.input_ids, out.attention_mask, torch.full_like(out.labels, IGNORE_INDEX))
    every_row = right_padded_stack(TokenizedExamples(in_scope.input_ids, in_scope.attention_mask, labels), unlabelled_out)
    return replace(batch, edit=every_row)


def locality_weights(batch: EditBatch, kind: str, hard_weight: float) -> Tensor:
    """The out-of-scope positions the KL averages over, each hard look-alike prompt's (same subject or same relation)
    counted ``hard_weight`` times: they are a few rows among unrelated ones, and where an edit leaks."""
    mask = prediction_mask(batch.out_of_scope, kind).float()
    if hard_weight == 1.0 or batch.out_of_scope_kind is None:
        return mask
    hard = (batch.out_of_scope_kind != UNRELATED).to(mask.device)
    return mask * torch.where(hard, hard_weight, 1.0).unsqueeze(1)


def edit_and_locality_step(editor: Editor, batch: EditBatch, c_edit: float, c_loc: float,
                           edit_reads_only_gradients: bool = False, hard_weight: float = 1.0,
                           continuations: Continuations | None = None, c_continuation: float = 0.0) -> Tensor | None:
    """Edit with ``batch``, return the weighted loss (logged with its parts), or skip the step if the edit or the
    loss is not finite. ``edit_reads_only_gradients``: the editor's edit depends on its edit examples only through
    their loss's gradients (rows without labels change nothing), so the edit may be made over every row.
    ``hard_weight``: see :func:`locality_weights`. ``continuations``, ``c_continuation``: a third term,
    c_continuation · KL(unedited || edited) over the unedited model's continuation of each edit prompt and its new
    target (:mod:`lit_edit.mechanics.continuation_locality`)."""
    lower = editor.lower_blocks
    shared = edit_over_every_row(batch) if lower is not None and edit_reads_only_gradients else None
    in_scope, out_of_scope = batch.in_scope, batch.out_of_scope
    in_below = out_below = None  # recordings of the lower blocks to replay, where there are some
    try:
        with record_function(STEP_PARTS["edit"]):
            if shared is None:
                edited = editor.edit(batch)
            else:  # the edit's pass records the lower blocks of every row
                with lower.recorded() as every_row_below:
                    edited = editor.edit(shared)
                in_below = every_row_below.part(slice(0, len(in_scope)), in_scope.input_ids.shape[1])
                out_below = every_row_below.part(slice(len(in_scope), None), out_of_scope.input_ids.shape[1])
    except EditFailedError:
        return editor.skip_step()
    with record_function(STEP_PARTS["in_scope"]):  # the NLL reads the targets only
        post_in, in_labels = _through(lower, in_below, lambda: edited.logits(in_scope, labelled_only=True),
                                      "in-scope pass")
    with record_function(STEP_PARTS["unedited_out"]), torch.no_grad():
        if lower is not None and out_below is None:  # this pass records the lower blocks for the edited one
            with lower.recorded() as out_below:
                pre_out, _ = editor.logits(out_of_scope)
        else:
            pre_out, _ = _through(lower, out_below, lambda: editor.logits(out_of_scope), "out-of-scope pass")
    with record_function(STEP_PARTS["edited_out"]):
        post_out, _ = _through(lower, out_below, lambda: edited.logits(out_of_scope), "out-of-scope pass")
    edit_loss = nll_loss(post_in, in_labels)
    loc_loss = locality_kl(pre_out, post_out, locality_weights(batch, editor.kind, hard_weight))
    loss = c_edit * edit_loss + c_loc * loc_loss
    logged = {"train/loss": loss, "train/edit_loss": edit_loss, "train/loc_loss": loc_loss,
              "train/es": edit_success(post_in.detach(), in_labels)}
    if continuations is not None and c_continuation > 0:
        with record_function(STEP_PARTS["continuation"]):
            after = continuation_kl(editor.model, edited, continuations.rows(editor.model, batch.edit))
        loss = loss + c_continuation * after
        logged.update({"train/loss": loss, "train/continuation_loss": after})
    if not torch.isfinite(loss):
        return editor.skip_step()
    editor.log_dict(logged, prog_bar=True, batch_size=len(batch))
    return loss
