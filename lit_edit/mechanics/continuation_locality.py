"""Locality after the target: the edited model, having written its new target, should go on as the unedited model
would if it had been told the new fact.

Why: the locality KL sees other prompts' next tokens and the edit loss sees the target; nothing sees what the edited
model writes *after* the target, where a rank-one update that fires on every later position keeps recalling it
("The Mona Lisa was painted by Picasso in Picasso Picasso ..."). The unedited model, reading the edit prompt and the
new target as its own input, continues fluently; :class:`Continuations` makes that continuation once per edit (greedy,
a few tokens) and labels it, so that KL(unedited || edited) over its positions is one more locality term
(:func:`continuation_kl`). Causal LMs only: elsewhere the target ends the output.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import GenerationConfig, PreTrainedModel

from lit_edit.data.batch import IGNORE_INDEX, TokenizedExamples, context_length
from lit_edit.mechanics.edited_model import EditedModel, aligned_logits, locality_kl
from lit_edit.mechanics.settings import require_at_least


class Continuations:
    """Greedy continuations of edit rows (prompt + new target) by the unedited model, each made once and kept: a
    training run sees each edit many times, and the unedited model's continuation of it never changes."""

    def __init__(self, tokens: int) -> None:
        require_at_least("Continuations", "tokens", tokens, 1)
        self.tokens = tokens
        self._made: dict[tuple[int, ...], tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self._made)

    @torch.no_grad()
    def _continue(self, model: PreTrainedModel, row: tuple[int, ...]) -> tuple[int, ...]:
        limit = context_length(model.config)
        new = self.tokens if limit is None else min(self.tokens, limit - len(row))
        if new < 1:
            return ()
        device = next(model.parameters()).device
        ids = torch.tensor([row], device=device)
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        config = GenerationConfig(max_new_tokens=new, do_sample=False, eos_token_id=eos,
                                  pad_token_id=next(iter(eos_ids), 0))
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
        made: list[int] = []
        for token in out[0, len(row):].tolist():
            made.append(token)
            if token in eos_ids:  # what generate pads with after it is not part of the continuation
                break
        return tuple(made)

    def rows(self, model: PreTrainedModel, edit: TokenizedExamples) -> TokenizedExamples:
        """Each edit row's real tokens followed by its continuation, right-padded; only the continuation labelled
        (a causal LM's label t is predicted at position t - 1, so the first label is read right after the target)."""
        full: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        for ids, mask in zip(edit.input_ids.tolist(), edit.attention_mask.tolist(), strict=True):
            row = tuple(token for token, real in zip(ids, mask, strict=True) if real)
            if row not in self._made:
                self._made[row] = self._continue(model, row)
            full.append((row, self._made[row]))
        length = max(len(row) + len(more) for row, more in full)
        input_ids = torch.zeros(len(full), length, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for i, (row, more) in enumerate(full):
            n = len(row) + len(more)
            input_ids[i, :n] = torch.tensor(row + more)
            attention_mask[i, :n] = 1
            labels[i, len(row):n] = torch.tensor(more, dtype=torch.long)
        return TokenizedExamples(input_ids, attention_mask, labels).to(edit.input_ids.device)


def continuation_kl(model: PreTrainedModel, edited: EditedModel, rows: TokenizedExamples) -> Tensor:
    """KL(unedited || edited) of the next-token distributions over the continuation positions of ``rows``
    (:meth:`Continuations.rows`), averaged; the unedited side carries no gradient. 0 where nothing was continued."""
    if not bool((rows.labels != IGNORE_INDEX).any()):
        return rows.input_ids.new_zeros((), dtype=torch.float32)
    with torch.no_grad():
        pre, labels = aligned_logits(model, rows, "causal", labelled_only=True)
    post, _ = edited.logits(rows, labelled_only=True)
    return locality_kl(pre, post, labels != IGNORE_INDEX)
