"""Editors on tiny random models: edits change in-scope answers, leave the base model untouched, fail cleanly."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import synthetic_records

from lit_edit.data.batch import TokenizedExamples
from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editors import ENN, MEND, EditFailedError, FineTune, NoEdit
from lit_edit.editors.edited_model import aligned_logits, locality_kl, nll_loss, prediction_mask
from lit_edit.metrics import edit_success, retention
from lit_edit.models import load_model

RECORD = EditRecord(
    case_id="0", prompt="the colour of s1 is", target_new="c5", subject="s1",
    paraphrases=("s1 has the colour",),
    out_of_scope=(LabeledPrompt("the home of s9 is", "h2"), LabeledPrompt("where does s3 live ? in", "h1")),
)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bit_identical(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama", "t5", "bart"])
def test_ft_edit_changes_in_scope_and_keeps_base_model(tiny_models, arch):
    editor = FineTune(tiny_models[arch], steps=30, lr=1.0e-2)
    batch = editor.prompts.batch([RECORD])
    before = snapshot(editor.model)
    pre, labels = editor.logits(batch.edit)
    assert edit_success(pre, labels) == 0.0
    edited = editor.edit(batch)
    post, _ = editor.logits(batch.edit, edited)
    assert edit_success(post, labels) == 1.0
    assert_bit_identical(editor.model, before)  # functional edit: the base model is never written


@pytest.mark.parametrize("arch", ["gpt2", "llama", "t5"])
def test_labelled_only_logits_give_the_same_loss_and_gradient(tiny_models, arch):
    """The editors' losses read only the target positions; a causal LM then computes no other logits."""
    editor = NoEdit(tiny_models[arch])
    batch = editor.prompts.batch([RECORD, synthetic_records()[3]])
    name = tiny_models[arch].editable[0]
    results = []
    for labelled_only in (False, True):
        weight = dict(editor.model.named_parameters())[name].detach().clone().requires_grad_(True)
        logits, labels = aligned_logits(editor.model, batch.edit, editor.kind, {name: weight}, labelled_only)
        loss = nll_loss(logits, labels)
        results.append((logits.shape[1], loss.detach(), torch.autograd.grad(loss, weight)[0]))
    (all_positions, loss, grad), (kept, loss_kept, grad_kept) = results
    labels = batch.edit.labels[:, 1:] if editor.kind == "causal" else batch.edit.labels
    assert kept == int((labels != -100).any(0).sum())
    assert kept < all_positions or editor.kind == "seq2seq"  # a decoder's positions are all target tokens
    torch.testing.assert_close(loss_kept, loss)
    torch.testing.assert_close(grad_kept, grad)


def test_ft_edit_on_gpt2_keeps_out_of_scope_predictions(knowing_gpt2):
    record = synthetic_records()[3]
    editor = FineTune(knowing_gpt2, steps=10, lr=1.0e-2)
    batch = editor.prompts.batch([record])
    pre_in, in_labels = editor.logits(batch.edit)
    pre, labels = editor.logits(batch.out_of_scope)
    assert edit_success(pre_in, in_labels) == 0.0 and edit_success(pre, labels) == 1.0  # it knows the facts
    edited = editor.edit(batch)
    post, _ = editor.logits(batch.out_of_scope, edited)
    post_in, _ = editor.logits(batch.edit, edited)
    assert edit_success(post_in, in_labels) == 1.0
    far = [i for i, p in enumerate(batch.records[0].out_of_scope)]  # an unrelated subject and relation
    assert retention(pre[far], post[far], labels[far]) == 1.0


def test_failed_edit_raises_and_leaves_model_bit_identical(tiny_models):
    editor = FineTune(tiny_models["gpt2"], steps=3)
    editor.lr = float("inf")  # refused as a setting (tests/test_reliability_contract.py): forced here
    batch = editor.prompts.batch([RECORD])
    before = snapshot(editor.model)
    with pytest.raises(EditFailedError):
        editor.edit(batch)
    assert_bit_identical(editor.model, before)


def test_edited_model_applied_always_restores(tiny_models):
    editor = FineTune(tiny_models["llama"], steps=5, lr=1.0e-2)
    edited = editor.edit(editor.prompts.batch([RECORD]))
    before = snapshot(editor.model)
    with pytest.raises(RuntimeError, match="boom"), edited.applied() as model:
        assert not torch.equal(model.state_dict()[editor.editable_names[0]], before[editor.editable_names[0]])
        raise RuntimeError("boom")
    assert_bit_identical(editor.model, before)


def test_ft_kl_keeps_locality_prompts_closer_than_ft(tiny_models):
    locality = ["the home of s9 is", "alpha beta gamma delta", "s3 lives in"]
    ft = FineTune(tiny_models["gpt2"], steps=20, lr=1.0e-2, locality_prompts=locality)
    ft_kl = FineTune(tiny_models["gpt2"], steps=20, lr=1.0e-2, kl_weight=10.0, locality_prompts=locality)
    assert (ft.name, ft_kl.name) == ("FT", "FT+KL")
    batch = ft.prompts.batch([RECORD])
    examples = ft.locality_examples()
    pre, _ = ft.logits(examples)
    mask = prediction_mask(examples, "causal")
    kl = {e.name: locality_kl(pre, e.logits(examples, e.edit(batch))[0], mask) for e in (ft, ft_kl)}
    assert kl["FT+KL"] < 0.5 * kl["FT"]


def test_no_edit_is_the_identity(tiny_models):
    editor = NoEdit(tiny_models["gpt2"])
    batch = editor.prompts.batch([RECORD])
    pre, _ = editor.logits(batch.in_scope)
    post, _ = editor.logits(batch.in_scope, editor.edit(batch))
    assert torch.equal(pre, post)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "t5"])
def test_untrained_mend_update_is_a_gradient_step(tiny_models, arch):
    """The MEND network starts as the identity and the running statistics are empty before training,
    so the first update is exactly -edit_lr times the fine-tuning gradient (a sum of per-token rank-1 terms)."""
    editor = MEND(tiny_models[arch], edit_lr=1.0e-3)
    editor.eval()
    batch = editor.prompts.batch([RECORD])
    name = editor.editable_names[0]
    update = editor.edit(batch).params[name] - editor.base_params()[name]
    weight = editor.base_params()[name].detach().requires_grad_(True)
    loss = nll_loss(*aligned_logits(editor.model, batch.edit, editor.kind, {name: weight}))
    (grad,) = torch.autograd.grad(loss, weight)
    assert grad.abs().max() > 0
    torch.testing.assert_close(update, -1.0e-3 * grad, rtol=1e-3, atol=1e-4 * float(update.abs().max()))
    tokens = batch.edit.input_ids.numel() if editor.kind == "causal" else None
    assert torch.linalg.matrix_rank(update.detach().double(), rtol=1e-4) <= (tokens or min(update.shape))


def test_mend_checkpoint_holds_only_editor_weights(tiny_models, tmp_path):
    editor = MEND(tiny_models["gpt2"], rank=8)
    key = next(iter(editor.networks))
    torch.nn.init.normal_(editor.networks[key].up[0].weight)  # pretend it was trained
    checkpoint = {"state_dict": editor.state_dict()}
    editor.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(k.startswith("model.") for k in checkpoint["state_dict"])
    torch.save(checkpoint, tmp_path / "editor.ckpt")
    fresh = MEND(tiny_models["gpt2"], rank=8, checkpoint=str(tmp_path / "editor.ckpt"))
    assert torch.equal(fresh.networks[key].up[0].weight, editor.networks[key].up[0].weight)
    assert fresh.networks[key].up[0].weight.abs().sum() > 0
    assert load_model(tiny_models["gpt2"]) is fresh.model  # the base model comes from its spec, loaded once


def test_mend_loads_checkpoints_from_before_the_rates_moved(tiny_models, tmp_path):
    """Older checkpoints name MEND's learned rates `edit_lrs`; they now live in a ParameterBank."""
    editor = MEND(tiny_models["gpt2"], rank=8)
    state = editor.state_dict()
    state["edit_lrs"] = torch.full_like(state.pop("edit_lrs.values.0"), 0.125)
    torch.save({"state_dict": state}, tmp_path / "old.ckpt")
    fresh = MEND(tiny_models["gpt2"], rank=8, checkpoint=str(tmp_path / "old.ckpt"))
    assert torch.equal(fresh.edit_lrs[0], torch.full_like(fresh.edit_lrs[0], 0.125))


def pad_right(examples: TokenizedExamples, n: int) -> TokenizedExamples:
    """The same examples with ``n`` more padding positions on the input and on the labels."""
    def extend(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.cat([t, t.new_full((t.shape[0], n), value)], dim=1)
    return TokenizedExamples(extend(examples.input_ids, 0), extend(examples.attention_mask, 0), extend(examples.labels, -100))


@pytest.mark.parametrize("arch,editable", [
    ("gpt2", None), ("llama", None),
    ("t5", ["encoder.block.1.layer.1.DenseReluDense.wo.weight", "decoder.block.1.layer.2.DenseReluDense.wo.weight"]),
    ("bart", ["model.encoder.layers.1.fc2.weight", "model.decoder.layers.1.fc2.weight"]),
])
def test_mend_edit_ignores_padding(tiny_models, arch, editable):
    """Padded positions add nothing to the gradient, so they must add nothing to a (trained) MEND edit,
    on causal models and on both the encoder and the decoder of seq2seq models."""
    spec = tiny_models[arch] if editable is None else replace(tiny_models[arch], editable=editable)
    editor = MEND(spec, rank=8, edit_lr=1.0e-2)
    torch.manual_seed(0)
    for network in editor.networks.values():  # a trained network is not the identity: offsets move padding rows
        for parameter in (*network.up.parameters(), network.offset):
            torch.nn.init.normal_(parameter, std=0.1)
    editor.eval()
    batch = editor.prompts.batch([RECORD])
    padded = replace(batch, edit=pad_right(batch.edit, 3))
    plain, with_padding = editor.edit(batch).params, editor.edit(padded).params
    for name in editor.editable_names:
        assert not torch.equal(plain[name], editor.base_params()[name])
        torch.testing.assert_close(with_padding[name], plain[name], rtol=1e-4, atol=1e-6)


def enn_outer_edit_loss(editor: ENN, batch) -> torch.Tensor:
    """ENN's L_edit: the in-scope NLL after the (differentiable) inner loop."""
    return nll_loss(*editor.edit(batch).logits(batch.in_scope))


@pytest.mark.parametrize("arch", ["gpt2", "bart"])  # float64 end to end (T5's layer norm computes in float32)
def test_enn_meta_gradient_goes_through_the_inner_loop(tiny_models, arch):
    """The second-order meta-gradient matches central finite differences; the first-order one differs from it."""
    spec = replace(tiny_models[arch], dtype="float64")
    grads = {}
    for first_order in (False, True):
        editor = ENN(spec, inner_steps=2, inner_lr=0.5, first_order=first_order).train()
        batch = editor.prompts.batch([RECORD])
        (grads[first_order],) = torch.autograd.grad(enn_outer_edit_loss(editor, batch), [editor.weights[0]])
    weight, direction, eps = editor.weights[0], torch.randn_like(grads[False], generator=torch.Generator().manual_seed(0)), 1.0e-6
    with torch.no_grad():
        weight += eps * direction
    plus = enn_outer_edit_loss(editor, batch).item()
    with torch.no_grad():
        weight -= 2 * eps * direction
    minus = enn_outer_edit_loss(editor, batch).item()
    assert float((grads[False] * direction).sum()) == pytest.approx((plus - minus) / (2 * eps), rel=1e-5)
    assert (grads[True] - grads[False]).norm() > 1.0e-3 * grads[False].norm()  # 100x the tolerance above


def test_enn_test_time_edit_is_plain_steps_and_leaves_everything_unchanged(tiny_models):
    editor = ENN(tiny_models["llama"], inner_steps=3, inner_lr=0.5).eval()
    batch = editor.prompts.batch([RECORD])
    base, meta = snapshot(editor.model), [w.detach().clone() for w in editor.weights]
    with torch.enable_grad():
        edited = editor.edit(batch)
    name = editor.editable_names[0]
    params = {name: editor.weights[0].detach().clone().requires_grad_(True)}
    for _ in range(3):  # three plain SGD steps at the learned rate
        (grad,) = torch.autograd.grad(nll_loss(*aligned_logits(editor.model, batch.edit, "causal", params)),
                                      [params[name]])
        params = {name: (params[name] - editor.inner_lrs[0][0].detach() * grad).detach().requires_grad_(True)}
    torch.testing.assert_close(edited.params[name], params[name].detach())
    assert not edited.params[name].requires_grad
    assert_bit_identical(editor.model, base)
    assert all(torch.equal(w, m) for w, m in zip(editor.weights, meta, strict=True))


def test_enn_diverging_inner_loop_fails_cleanly(tiny_models):
    editor = ENN(tiny_models["gpt2"], inner_steps=2).eval()
    with torch.no_grad():  # an infinite rate is refused as a setting: forced here
        editor.inner_lrs[0].fill_(float("inf"))
    before = snapshot(editor.model)
    with pytest.raises(EditFailedError), torch.enable_grad():
        editor.edit(editor.prompts.batch([RECORD]))
    assert_bit_identical(editor.model, before)


def test_enn_checkpoint_holds_meta_trained_weights_and_rates_only(tiny_models, tmp_path):
    editor = ENN(tiny_models["gpt2"], inner_lr=0.5)
    with torch.no_grad():
        editor.weights[0].add_(1.0)  # pretend meta-training moved it
        editor.inner_lrs[0].fill_(0.25)
    checkpoint = {"state_dict": editor.state_dict()}
    editor.on_save_checkpoint(checkpoint)
    assert sorted(checkpoint["state_dict"]) == ["inner_lrs.values.0", "weights.values.0"]
    torch.save(checkpoint, tmp_path / "enn.ckpt")
    fresh = ENN(tiny_models["gpt2"], checkpoint=str(tmp_path / "enn.ckpt"))
    assert torch.equal(fresh.weights[0], editor.weights[0]) and float(fresh.inner_lrs[0][0]) == 0.25
    assert not torch.equal(fresh.weights[0], fresh.base_params()[fresh.editable_names[0]])  # the original stays


def test_hard_out_of_scope_prompts_weigh_hard_locality_weight_times_in_the_kl(tiny_models):
    """MEND's ``hard_locality_weight``: each hard (same-subject / same-relation) out-of-scope prompt counts that many
    times in the locality KL's average; 1 keeps the plain average over every out-of-scope position."""
    from lit_edit.data.batch import SAME_RELATION, UNRELATED
    from lit_edit.editors.objective import locality_weights

    hard = LabeledPrompt("the colour of s7 is", "c2")
    record = EditRecord(case_id="0", prompt=RECORD.prompt, target_new="c5", subject="s1",
                        out_of_scope=RECORD.out_of_scope, hard_out_of_scope=(hard,))
    editor = MEND(tiny_models["gpt2"])
    batch = editor.prompts.batch([record])
    assert batch.out_of_scope_kind.tolist() == [UNRELATED, UNRELATED, SAME_RELATION]
    mask = prediction_mask(batch.out_of_scope, "causal").float()
    weights = locality_weights(batch, "causal", 4.0)
    torch.testing.assert_close(weights, mask * torch.tensor([[1.0], [1.0], [4.0]]))
    torch.testing.assert_close(locality_weights(batch, "causal", 1.0), mask)

    pre, _ = editor.logits(batch.out_of_scope)
    post = editor.logits(batch.out_of_scope, editor.edit(batch))[0].detach()
    per_row = [float(locality_kl(pre[i:i + 1], post[i:i + 1], mask[i:i + 1])) for i in range(3)]
    counts = mask.sum(1).tolist()
    by_hand = sum(w * c * kl for w, c, kl in zip((1, 1, 4), counts, per_row, strict=True)) / sum(
        w * c for w, c in zip((1, 1, 4), counts, strict=True))
    assert float(locality_kl(pre, post, weights)) == pytest.approx(by_hand, rel=1e-5)
    assert per_row[2] != pytest.approx(per_row[0])  # the weighting moves the average
