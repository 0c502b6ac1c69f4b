"""Greedy completions, for showing what a model says before and after an edit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

if TYPE_CHECKING:
    from lit_edit.editors.base import Editor
    from lit_edit.editors.edited_model import EditedModel


@torch.no_grad()
def greedy_completion(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, kind: str, prompt: str,
                      max_new_tokens: int = 12) -> str:
    """The greedy continuation of ``prompt`` (a seq2seq model's whole output), on one line."""
    device = next(model.parameters()).device
    encoded = tokenizer(prompt, return_tensors="pt").to(device)
    output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id)
    start = 0 if kind == "seq2seq" else encoded["input_ids"].shape[1]
    return tokenizer.decode(output[0, start:], skip_special_tokens=True).replace("\n", " ")


def before_and_after(editor: Editor, edited: EditedModel, prompts: Sequence[str],
                     max_new_tokens: int = 12) -> list[tuple[str, str]]:
    """Each prompt's greedy completion by the unedited model and by the edited one (written in once for all)."""
    before = [greedy_completion(editor.model, editor.tokenizer, editor.kind, p, max_new_tokens) for p in prompts]
    with edited.applied() as model:
        after = [greedy_completion(model, editor.tokenizer, editor.kind, p, max_new_tokens) for p in prompts]
    return list(zip(before, after, strict=True))
