"""Activation checkpointing of the base model: the same gradients, second order included, for less memory."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from test_editors import RECORD

from lit_edit.activation_checkpointing import checkpoint_blocks
from lit_edit.editors import ENN, MEND
from lit_edit.editors.edited_model import locality_kl, nll_loss, prediction_mask


def enn_outer_loss(editor: ENN, batch) -> torch.Tensor:
    """ENN's training objective on one batch: in-scope NLL after the inner loop plus the locality KL."""
    edited = editor.edit(batch)
    loss = nll_loss(*edited.logits(batch.in_scope))
    out = batch.out_of_scope
    unedited, _ = editor.logits(out)
    return loss + locality_kl(unedited.detach(), edited.logits(out)[0], prediction_mask(out, editor.kind))


def saved_tensor_count(fn) -> tuple[int, torch.Tensor]:
    """How many tensors autograd keeps for backward while ``fn`` runs (what checkpointing drops)."""
    count = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = fn()
    return count, result


@pytest.mark.parametrize("arch", ["gpt2", "llama", "t5", "bart"])
@pytest.mark.parametrize("first_order", [False, True], ids=["second_order", "first_order"])
def test_enn_meta_gradients_agree_with_and_without_checkpointing(tmp_path, arch, first_order):
    spec = make_tiny_model(tmp_path / arch, arch)  # a model instance of its own: checkpointing wraps it in place
    spec.editable = [*spec.editable, spec.editable[0].replace(".1.", ".0.")]  # both blocks' weights, so
    torch.manual_seed(0)                                                    # backward crosses both blocks
    editor = ENN(spec, inner_steps=2, inner_lr=0.5, first_order=first_order).train()
    batch = editor.prompts.batch([RECORD])
    meta = [*editor.weights.parameters(), *editor.inner_lrs.parameters()]

    plain_saved, loss = saved_tensor_count(lambda: enn_outer_loss(editor, batch))
    plain = torch.autograd.grad(loss, meta)
    blocks = checkpoint_blocks(editor.model)
    assert len(blocks) >= 2
    checkpointed_saved, loss_ckpt = saved_tensor_count(lambda: enn_outer_loss(editor, batch))
    checkpointed = torch.autograd.grad(loss_ckpt, meta)

    torch.testing.assert_close(loss_ckpt, loss)
    for with_checkpointing, without in zip(checkpointed, plain, strict=True):
        assert without.abs().sum() > 0
        torch.testing.assert_close(with_checkpointing, without, rtol=1e-4, atol=1e-6)
    # Block activations are recomputed in backward instead of kept (measured: 0.6-0.8x as many saved tensors
    # second order, 0.4-0.6x first order; the rest are the inner gradients' graph and the loss's own).
    assert checkpointed_saved < 0.9 * plain_saved, (checkpointed_saved, plain_saved)


def test_mend_edit_is_the_same_with_checkpointing(tmp_path):
    spec = make_tiny_model(tmp_path / "llama", "llama")
    torch.manual_seed(0)
    editor = MEND(spec, rank=8, edit_lr=1.0e-2).eval()  # eval: the running normalisation stays as it is
    batch = editor.prompts.batch([RECORD])
    plain = editor.edit(batch).params
    loss = nll_loss(*editor.edit(batch).logits(batch.in_scope))
    (grad,) = torch.autograd.grad(loss, [editor.edit_lrs[0]])
    checkpoint_blocks(editor.model)
    checkpointed = editor.edit(batch).params
    loss_ckpt = nll_loss(*editor.edit(batch).logits(batch.in_scope))
    (grad_ckpt,) = torch.autograd.grad(loss_ckpt, [editor.edit_lrs[0]])
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name])
    torch.testing.assert_close(grad_ckpt, grad, rtol=1e-4, atol=1e-7)


def test_checkpointing_needs_block_classes(tiny_models):
    with pytest.raises(ValueError, match="no module .* block classes"):
        checkpoint_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)), ["NoSuchBlock"])
    with pytest.raises(ValueError, match="declares no block classes"):
        checkpoint_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))
