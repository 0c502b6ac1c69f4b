"""Greedy completions, for showing what a model says before and after an edit (a classifier's: its predicted class).

Generation never runs past the model's context (its config's position count): a prompt that leaves too little room
gets fewer new tokens, and a prompt longer than the context loses its start (its end, for a seq2seq encoder),
each with a warning that names the prompt. Past the context, a learned position table has no entry (an
``IndexError``) and rotary models produce text they were never trained to.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_edit.data.batch import context_length
from lit_edit.errors import ConfigurationError

if TYPE_CHECKING:
    from lit_edit.editors.base import Editor
    from lit_edit.mechanics.edited_model import EditedModel


def model_context(model: Any) -> int | None:
    """The context of ``model`` or of the base model it wraps (a routed memory editor's generator has ``base``)."""
    config = getattr(model, "config", None) or getattr(getattr(model, "base", None), "config", None)
    return context_length(config)


def _shown(prompt: str) -> str:
    return f"{prompt[:40]!r}{'...' if len(prompt) > 40 else ''}"


def fit_encoder_input(encoded: dict[str, Tensor], limit: int | None, prompt: str,
                      stacklevel: int = 3) -> dict[str, Tensor]:
    """An encoder's input within ``limit`` positions (``None``: no limit): a longer one loses its end, with a
    warning that names the prompt."""
    length = encoded["input_ids"].shape[1]
    if limit is None or length <= limit:
        return encoded
    warnings.warn(f"prompt {_shown(prompt)} is {length} tokens, more than the model's context of {limit}: its last "
                  f"{length - limit} tokens are dropped", UserWarning, stacklevel=stacklevel)
    return {name: value[:, :limit] for name, value in encoded.items()}


def fit_context(encoded: dict[str, Tensor], max_new_tokens: int, limit: int | None, kind: str,
                prompt: str) -> tuple[dict[str, Tensor], int]:
    """The inputs and the number of new tokens that fit in ``limit`` positions (``None``: no limit), warning about
    what was cut."""
    if limit is None:
        return encoded, max_new_tokens
    length = encoded["input_ids"].shape[1]
    shown = _shown(prompt)
    if kind == "seq2seq":  # the encoder reads the prompt; the decoder writes from its start token
        encoded = fit_encoder_input(encoded, limit, prompt, stacklevel=4)
        new = min(max_new_tokens, limit - 1)
    elif length < limit:
        new = min(max_new_tokens, limit - length)
    else:
        new = min(max_new_tokens, limit // 2)
        keep = limit - new
        warnings.warn(f"prompt {shown} is {length} tokens, more than the model's context of {limit}: its first "
                      f"{length - keep} tokens are dropped to generate {new}", UserWarning, stacklevel=3)
        encoded = {name: value[:, -keep:] for name, value in encoded.items()}
    if new < max_new_tokens:
        warnings.warn(f"generation after prompt {shown} stops after {new} of the {max_new_tokens} new tokens asked: "
                      f"the model's context is {limit} tokens", UserWarning, stacklevel=3)
    return encoded, new


@torch.no_grad()
def greedy_completion(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, kind: str, prompt: str,
                      max_new_tokens: int = 12) -> str:
    """The greedy continuation of ``prompt`` (a seq2seq model's whole output), on one line, within the context; a
    classifier's predicted class name (``max_new_tokens`` unused)."""
    if max_new_tokens < 1:
        raise ConfigurationError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = next(model.parameters()).device
    encoded = dict(tokenizer(prompt, return_tensors="pt").to(device))
    if kind == "classifier":
        return predicted_class(model, encoded, prompt)
    encoded, max_new_tokens = fit_context(encoded, max_new_tokens, model_context(model), kind, prompt)
    output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id)
    start = 0 if kind == "seq2seq" else encoded["input_ids"].shape[1]
    return tokenizer.decode(output[0, start:], skip_special_tokens=True).replace("\n", " ")


def predicted_class(model: Any, encoded: dict[str, Tensor], prompt: str) -> str:
    """A classifier's class name for one encoded input (its end dropped, with a warning, past the context)."""
    encoded = fit_encoder_input(encoded, model_context(model), prompt, stacklevel=4)
    index = int(model(**encoded).logits[0].argmax())
    return str(model.config.id2label.get(index, index))


def before_and_after(editor: Editor, edited: EditedModel, prompts: Sequence[str],
                     max_new_tokens: int = 12) -> list[tuple[str, str]]:
    """Each prompt's greedy completion by the unedited model and by the edited one (written in once for all)."""
    before = [greedy_completion(editor.model, editor.tokenizer, editor.kind, p, max_new_tokens) for p in prompts]
    with edited.applied() as model:
        after = [greedy_completion(model, editor.tokenizer, editor.kind, p, max_new_tokens) for p in prompts]
    return list(zip(before, after, strict=True))
