"""The after-target locality term: the unedited model's continuation of an edit prompt and its new target, labelled
alone, made once per edit, and a KL over its positions that MEND's training step adds c_continuation times."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from lit_edit.data.batch import IGNORE_INDEX
from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editors import MEND
from lit_edit.editors.objective import edit_and_locality_step
from lit_edit.errors import ConfigurationError
from lit_edit.mechanics.continuation_locality import Continuations, continuation_kl

RECORD = EditRecord(
    case_id="0", prompt="the colour of s1 is", target_new="c5", subject="s1",
    paraphrases=("s1 has the colour",),
    out_of_scope=(LabeledPrompt("the home of s9 is", "h2"), LabeledPrompt("where does s3 live ? in", "h1")),
)
OTHER = EditRecord(case_id="1", prompt="where does s2 live ? in", target_new="h3", subject="s2")


def greedy_by_hand(model: torch.nn.Module, row: list[int], tokens: int) -> list[int]:
    """Argmax of a full forward pass, one token at a time (no cache, no generate)."""
    ids = list(row)
    with torch.no_grad():
        for _ in range(tokens):
            logits = model(input_ids=torch.tensor([ids])).logits
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(row):]


def edited_mend(spec, **kwargs) -> MEND:
    torch.manual_seed(0)
    editor = MEND(spec, edit_lr=1.0, **kwargs).eval()
    with torch.no_grad():  # off its identity start, so that the edit is large enough to move what follows
        for p in editor.networks.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return editor


def test_rows_are_the_edit_followed_by_its_greedy_continuation_labelled_alone_and_made_once(tiny_models):
    editor = MEND(tiny_models["gpt2"]).eval()
    batch = editor.prompts.batch([RECORD, OTHER])
    continuations = Continuations(4)
    rows = continuations.rows(editor.model, batch.edit)
    for i in range(2):
        real = batch.edit.input_ids[i][batch.edit.attention_mask[i].bool()].tolist()
        n = int(rows.attention_mask[i].sum())
        assert rows.input_ids[i, :len(real)].tolist() == real
        assert rows.input_ids[i, len(real):n].tolist() == greedy_by_hand(editor.model, real, 4)
        labelled = (rows.labels[i] != IGNORE_INDEX).nonzero().squeeze(1).tolist()
        assert labelled == list(range(len(real), n))  # the continuation only: not the prompt, not the target
        assert rows.labels[i, len(real):n].tolist() == rows.input_ids[i, len(real):n].tolist()
    assert len(continuations) == 2
    changed = copy.deepcopy(editor.model)  # a copy: the loaded model is shared by every test
    with torch.no_grad():  # kept: a changed model does not change what was made
        for p in changed.parameters():
            p.add_(1.0)
    again = continuations.rows(changed, batch.edit)
    assert torch.equal(again.input_ids, rows.input_ids) and len(continuations) == 2


def test_continuation_kl_is_the_mean_kl_over_the_continuation_positions(tiny_models):
    editor = edited_mend(tiny_models["gpt2"])
    batch = editor.prompts.batch([RECORD, OTHER])
    rows = Continuations(3).rows(editor.model, batch.edit)
    edited = editor.edit(batch)
    with torch.no_grad():
        pre = editor.model(input_ids=rows.input_ids, attention_mask=rows.attention_mask).logits.log_softmax(-1)
        with edited.applied() as model:
            post = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask).logits.log_softmax(-1)
    per_position = []
    for i in range(2):
        for t in (rows.labels[i] != IGNORE_INDEX).nonzero().squeeze(1).tolist():  # label t is read at t - 1
            p, q = pre[i, t - 1], post[i, t - 1]
            per_position.append(float((p.exp() * (p - q)).sum()))
    by_hand = sum(per_position) / len(per_position)
    assert by_hand > 1e-6  # the edit moves what follows, or this test proves nothing
    assert float(continuation_kl(editor.model, edited, rows).detach()) == pytest.approx(by_hand, rel=1e-4)


def test_mend_step_adds_c_continuation_times_the_after_target_kl(tiny_models):
    spec = tiny_models["gpt2"]
    batch = MEND(spec).prompts.batch([RECORD])
    losses, editors = {}, {}
    for weight in (0.0, 2.0):
        editor = editors[weight] = edited_mend(spec, c_continuation=weight, continuation_tokens=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log outside a Trainer
            losses[weight] = edit_and_locality_step(editor, batch, 0.1, 1.0, edit_reads_only_gradients=True,
                                                    continuations=editor.continuations,
                                                    c_continuation=editor.c_continuation)
    editor = edited_mend(spec)
    after = continuation_kl(editor.model, editor.edit(batch), Continuations(3).rows(editor.model, batch.edit))
    assert float(after) > 1e-6
    assert float(losses[2.0] - losses[0.0]) == pytest.approx(2.0 * float(after), rel=1e-4)
    (losses[2.0] - losses[0.0]).backward()  # the term alone trains the editor networks
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in editors[2.0].networks.parameters())


def test_the_after_target_term_is_refused_where_nothing_follows_the_target(tiny_models):
    with pytest.raises(ConfigurationError, match="c_continuation needs a causal LM"):
        MEND(tiny_models["t5"], c_continuation=1.0)
    with pytest.raises(ValueError, match="continuation_tokens"):
        MEND(tiny_models["gpt2"], c_continuation=1.0, continuation_tokens=0)
