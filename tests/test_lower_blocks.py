"""The blocks below the edited ones run once for the unedited and the edited pass over the same inputs
(lit_edit.editors.lower_blocks): the training step's loss and gradients are those of two full passes."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch

from lit_edit.data.datamodule import EditDataModule
from lit_edit.editors import KE, MEND
from lit_edit.editors.lower_blocks import LowerBlocks
from lit_edit.editors.objective import edit_and_locality_step, edit_over_every_row

CAUSAL = ["gpt2", "gpt_neox", "llama"]


def first_batch(spec, splits, edits_per_batch: int = 2):
    data = EditDataModule(**{k: str(v) for k, v in splits.items()}, model=spec, edits_per_batch=edits_per_batch)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def loss_and_grads(editor, batch):
    editor.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        # MEND's edit is made over every row; KE's is not. (training_step would also move MEND's normaliser.)
        loss = edit_and_locality_step(editor, batch, 0.1, 10.0, edit_reads_only_gradients=isinstance(editor, MEND))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in editor.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", CAUSAL)
@pytest.mark.parametrize("editor_class", [MEND, KE])
def test_the_replayed_step_has_the_loss_and_gradients_of_full_passes(tiny_models, synthetic_splits, arch, editor_class):
    spec = tiny_models[arch]
    torch.manual_seed(0)
    editor = editor_class(spec).eval()  # eval: MEND's normaliser keeps its statistics between the two steps
    with torch.no_grad():  # move the editor off its identity start, so that the edit changes the locality KL
        for p in editor.parameters():
            p.add_(0.05 * torch.randn_like(p))
    lower = editor.lower_blocks
    assert lower is not None and lower.first_edited == 1  # the tiny models edit block 1 of 2
    batch = first_batch(spec, synthetic_splits)
    replayed_loss, replayed_grads = loss_and_grads(editor, batch)
    kinds = {"in-scope pass", "out-of-scope pass"} if editor_class is MEND else {"out-of-scope pass"}
    assert lower.checked == dict.fromkeys(kinds, True)
    editor.__dict__["_lower_blocks"] = None  # every pass in full
    full_loss, full_grads = loss_and_grads(editor, batch)
    assert replayed_loss.item() > 0
    assert torch.allclose(replayed_loss, full_loss, rtol=1e-5, atol=1e-7)
    assert replayed_grads.keys() == full_grads.keys() and replayed_grads
    for name, grad in full_grads.items():
        assert torch.allclose(replayed_grads[name], grad, rtol=1e-4, atol=1e-7), name


def test_replay_skips_the_lower_blocks_and_puts_them_back(tiny_models, synthetic_splits):
    editor = MEND(tiny_models["llama"])
    lower = editor.lower_blocks
    batch = first_batch(tiny_models["llama"], synthetic_splits)
    calls = []
    handle = lower.blocks[0].mlp.register_forward_pre_hook(lambda module, args: calls.append(1))  # runs if block 0 does
    try:
        with torch.no_grad(), lower.recorded() as below:
            full, _ = editor.logits(batch.out_of_scope)
        assert below.output is not None and len(calls) == 1
        block0_forward = lower.blocks[0].forward
        with torch.no_grad(), lower.replayed(below):
            replayed, _ = editor.logits(batch.out_of_scope)
            assert lower.blocks[0].forward is not block0_forward
        assert len(calls) == 1  # block 0 did not run
        assert lower.blocks[0].forward == block0_forward and "forward" not in lower.blocks[0].__dict__
        with torch.no_grad():
            after, _ = editor.logits(batch.out_of_scope)  # a plain pass again: block 0 runs
        assert len(calls) == 2
    finally:
        handle.remove()
    assert torch.equal(replayed, full) and torch.equal(after, full)


def test_a_replay_that_does_not_match_a_full_pass_is_turned_off(tiny_models, synthetic_splits):
    editor = MEND(tiny_models["gpt2"])
    lower = editor.lower_blocks
    batch = first_batch(tiny_models["gpt2"], synthetic_splits)
    with torch.no_grad(), lower.recorded() as below:
        full, _ = editor.logits(batch.out_of_scope)
    noise = torch.randn_like(below.output if torch.is_tensor(below.output) else below.output[0])
    below.output = below.output + noise if torch.is_tensor(below.output) else (below.output[0] + noise, *below.output[1:])
    with pytest.warns(UserWarning, match="did not reproduce a full pass"):
        logits, _ = lower.second_pass(below, lambda: editor.logits(batch.out_of_scope))
    assert lower.checked == {"pass": False} and torch.equal(logits, full)


def test_nothing_is_skipped_where_an_edit_reaches_the_first_block_or_the_model_is_seq2seq(tiny_models):
    editor = MEND(tiny_models["llama"])
    assert LowerBlocks.below(editor.model, ["model.layers.0.mlp.down_proj.weight"]) is None
    assert LowerBlocks.below(editor.model, ["model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight"]) is None
    assert MEND(tiny_models["t5"]).lower_blocks is None


@pytest.mark.parametrize("arch", CAUSAL)
def test_an_edit_made_over_every_row_is_the_edit_itself(tiny_models, synthetic_splits, arch):
    spec = tiny_models[arch]
    torch.manual_seed(0)
    editor = MEND(spec).eval()
    with torch.no_grad():
        for p in editor.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = first_batch(spec, synthetic_splits)
    over_in_scope = edit_over_every_row(batch)
    assert over_in_scope is not None and len(batch.edit) < len(over_in_scope.edit) == len(batch.in_scope) + len(batch.out_of_scope)
    alone, over = editor.edit(batch).params, editor.edit(over_in_scope).params
    for name, value in alone.items():
        assert torch.allclose(over[name], value, rtol=1e-5, atol=1e-7), name


def test_in_scope_rows_that_are_not_the_edit_examples_are_not_used(tiny_models, synthetic_splits):
    batch = first_batch(tiny_models["gpt2"], synthetic_splits)
    ids = batch.edit.input_ids.clone()
    ids[0, 0] = (ids[0, 0] + 1) % 50  # the first edit example is no longer the first in-scope row
    changed = replace(batch, edit=replace(batch.edit, input_ids=ids))
    assert edit_over_every_row(changed) is None
    paraphrases_only = replace(batch, in_scope_is_paraphrase=torch.ones_like(batch.in_scope_is_paraphrase))
    assert edit_over_every_row(paraphrases_only) is None


def test_an_edit_outside_training_leaves_mends_normaliser_as_it_was(tiny_models, synthetic_splits):
    editor = MEND(tiny_models["gpt2"])  # in training mode, as built
    batch = first_batch(tiny_models["gpt2"], synthetic_splits)
    before = {k: v.clone() for k, v in editor.state_dict().items()}
    editor.edit(batch)
    assert all(torch.equal(v, before[k]) for k, v in editor.state_dict().items())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        editor.training_step(batch, 0)
    counts = [network.norm.count.item() for network in editor.networks.values()]
    assert all(count > 0 for count in counts)  # a training step does learn the statistics
