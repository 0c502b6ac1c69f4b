"""Fine-tuning baselines: FT (a few optimizer steps on the edit) and FT+KL (plus a locality term).

FT+KL keeps the edited model close to the original on *locality prompts* of its own, never on the
batch's out-of-scope inputs, which are what the evaluation measures.
"""

from __future__ import annotations

import torch

from lit_edit.data.batch import EditBatch, TokenizedExamples
from lit_edit.editors.base import Editor
from lit_edit.mechanics.edit_result import builds_on_weights
from lit_edit.mechanics.edited_model import (
    EditedModel,
    EditFailedError,
    aligned_logits,
    locality_kl,
    nll_loss,
    prediction_mask,
)
from lit_edit.mechanics.settings import require_at_least, require_non_negative, require_positive
from lit_edit.models import ModelSpec

#: Generic text for FT+KL's locality term: nothing about the facts being edited.
DEFAULT_LOCALITY_PROMPTS = (
    "The weather today is mild with a light breeze and",
    "She opened the book and began to read the first",
    "In the morning, the children walked to school along the",
    "The recipe calls for two cups of flour, one egg and",
    "After the meeting, the team went out for lunch at a",
    "The train was late because of heavy snow on the",
    "He bought a new pair of shoes and a warm winter",
    "Music has been part of human culture for thousands of",
)


class FineTune(Editor):
    """FT: ``steps`` Adam steps on the edit's target NLL over the editable weights; ``kl_weight > 0`` gives FT+KL."""

    def __init__(self, model: ModelSpec | None = None, steps: int = 10, lr: float = 1.0e-3, kl_weight: float = 0.0,
                 locality_prompts: list[str] | None = None, max_length: int = 128) -> None:
        owner = type(self).__name__
        require_at_least(owner, "steps", steps, 1)
        require_positive(owner, "lr", lr)
        require_non_negative(owner, "kl_weight", kl_weight)
        super().__init__(model, max_length)
        self.save_hyperparameters()
        self.steps = steps
        self.lr = lr
        self.kl_weight = kl_weight
        self.locality_prompts = list(locality_prompts or DEFAULT_LOCALITY_PROMPTS)
        self._locality: TokenizedExamples | None = None

    @property
    def name(self) -> str:
        return "FT+KL" if self.kl_weight > 0 else "FT"

    def locality_examples(self) -> TokenizedExamples:
        """The locality prompts, every token a prediction to keep (no targets needed); a classifier's one
        prediction per prompt (its label is a placeholder class: the KL reads only the logits)."""
        if self._locality is None:
            # A classifier has a fixed context: its prompts are cut there, as its edit prompts are.
            cut = {"truncation": True, "max_length": self.prompts.max_length} if self.kind == "classifier" else {}
            encoded = self.tokenizer(self.locality_prompts, return_tensors="pt", padding=True, **cut)
            if self.kind == "classifier":
                labels = torch.zeros((len(self.locality_prompts), 1), dtype=torch.long)
            else:
                labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
            self._locality = TokenizedExamples(encoded["input_ids"], encoded["attention_mask"], labels)
        return self._locality.to(self.device)

    @builds_on_weights
    def edit(self, batch: EditBatch, on: EditedModel | None = None) -> EditedModel:
        params = {name: p.detach().clone().requires_grad_(True) for name, p in self.base_params().items()}
        optimizer = torch.optim.Adam(params.values(), lr=self.lr)
        if self.kl_weight > 0:
            locality = self.locality_examples()
            with torch.no_grad():
                pre_locality, _ = aligned_logits(self.model, locality, self.kind)
            locality_mask = prediction_mask(locality, self.kind)
        for _ in range(self.steps):
            optimizer.zero_grad(set_to_none=True)
            loss = nll_loss(*aligned_logits(self.model, batch.edit, self.kind, params, labelled_only=True))
            if self.kl_weight > 0:
                post_locality, _ = aligned_logits(self.model, locality, self.kind, params)
                loss = loss + self.kl_weight * locality_kl(pre_locality, post_locality, locality_mask)
            if not torch.isfinite(loss):
                raise EditFailedError(f"{self.name}: the edit loss became {loss.item()}; the model was left unchanged")
            loss.backward()
            optimizer.step()
        return EditedModel(self.model, self.kind, {name: p.detach() for name, p in params.items()})


class NoEdit(Editor):
    """The unedited model: the reference row of every results table."""

    @property
    def name(self) -> str:
        return "unedited"

    @builds_on_weights
    def edit(self, batch: EditBatch, on: EditedModel | None = None) -> EditedModel:
        return EditedModel(self.model, self.kind, {})
