"""The edit cache (MEND, appendix G): a nearest-neighbour memory over the base model's own hidden states.

Each edit stores its input's final-layer hidden state, averaged over the prompt's tokens, with the edit's
label. A query whose averaged hidden state lies within L2 distance ``epsilon`` of a stored one is answered
with that label; every other query goes to the base model. Nothing is trained: ``epsilon`` is the one knob
(``scripts/benchmark_memory_editors.py sweep`` shows how much it matters).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_edit.data.batch import IGNORE_INDEX, EditBatch, TokenizedExamples
from lit_edit.editors.routed import NO_EDIT, MemoryEditor, RoutedModel, Router, Routing, prompt_positions
from lit_edit.errors import ConfigurationError
from lit_edit.mechanics.edit_result import EditResult, composed
from lit_edit.mechanics.edited_model import EditFailedError, EditRefusedError, aligned_labels
from lit_edit.mechanics.memory import EditDescriptor, EditMemory
from lit_edit.mechanics.settings import require_non_negative
from lit_edit.models import ModelSpec

#: How far above every other token a cached answer's token scores: its probability is 1 - V·e^-20.
CACHED_MARGIN = 20.0


class EditCache(MemoryEditor):
    """Answer with a cached label when the query's averaged hidden state is within ``epsilon`` of an edit's."""

    def __init__(self, model: ModelSpec | None = None, epsilon: float = 1.0, max_length: int = 128) -> None:
        """
        Args:
            model: the base model.
            epsilon: largest L2 distance between averaged final-layer hidden states at which a query is taken
                to be the cached edit's input.
            max_length: longest tokenized prompt.
        """
        require_non_negative(type(self).__name__, "epsilon", epsilon)  # a distance
        super().__init__(model, max_length)
        if self.kind not in ("causal", "classifier"):
            raise ConfigurationError(f"EditCache answers causal LMs and classifiers only, got model.kind {self.kind!r}")
        self.save_hyperparameters()
        self.epsilon = epsilon

    @property
    def name(self) -> str:
        return "cache"

    @torch.no_grad()
    def prompt_states(self, examples: TokenizedExamples) -> tuple[Tensor, Tensor]:
        """(each row's final-layer hidden state averaged over its prompt tokens, the base model's aligned logits:
        a classifier's ``[batch, 1, classes]``)."""
        extra = {} if self.kind == "classifier" else {"use_cache": False}
        output = self.model(input_ids=examples.input_ids, attention_mask=examples.attention_mask,
                            output_hidden_states=True, **extra)
        hidden = output.hidden_states[-1].float()
        weights = prompt_positions(examples, self.kind).to(hidden.dtype)
        states = (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1.0)
        return states, output.logits[:, None] if self.kind == "classifier" else output.logits[:, :-1]

    def memory_for(self, batch: EditBatch, memory: EditMemory | None = None) -> EditMemory:
        """The edits of ``batch`` added to ``memory`` (default: a new one); all or nothing."""
        if len(batch.records) != len(batch):
            raise EditRefusedError(f"the cache stores edit descriptors: the batch has {len(batch)} edits but "
                                   f"{len(batch.records)} records; the model was left unchanged")
        states, _ = self.prompt_states(batch.edit)
        if not torch.isfinite(states).all():
            raise EditFailedError("cache: the base model's hidden state of an edit prompt is not finite; nothing was "
                                  "stored and the model was left unchanged")
        memory = memory if memory is not None else EditMemory(states.shape[1], "l2", states.device)
        memory.add([EditDescriptor(r.case_id, r.prompt, r.target_new) for r in batch.records], states)
        return memory

    def routed(self, memory: EditMemory) -> RoutedModel:
        return RoutedModel(self.model, self.kind, CacheRouter(self, memory, self.epsilon))

    def edit(self, batch: EditBatch, on: EditResult | None = None) -> EditResult:
        """The batch's edits cached in a new memory; on top of ``on`` (an earlier cache edit), joined to a copy of
        its memory."""
        return composed(on, self.routed(self.memory_for(batch)))


class CacheRouter(Router):
    """Routes by L2 distance of averaged hidden states; answers with the cached label's tokens, in order (a
    classifier's: its class)."""

    def __init__(self, cache: EditCache, memory: EditMemory, epsilon: float) -> None:
        self.cache, self.memory, self.epsilon = cache, memory, epsilon
        labels = [cache.prompts.target_ids(d.target) for d in memory.descriptors]
        eos = cache.tokenizer.eos_token_id
        self.eos = int(eos if eos is not None else cache.prompts.pad_id)
        width = max((len(row) for row in labels), default=1)
        self.label_ids = torch.full((len(labels), width + 1), self.eos, dtype=torch.long)  # EOS after the label
        for i, row in enumerate(labels):
            self.label_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)

    def over(self, memory: EditMemory) -> CacheRouter:
        return CacheRouter(self.cache, memory, self.epsilon)

    @property
    def empty(self) -> bool:
        return len(self.memory) == 0

    def route(self, examples: TokenizedExamples) -> Routing:
        states, logits = self.cache.prompt_states(examples)
        distance, index = self.memory.nearest(states)
        return Routing(torch.where(distance <= self.epsilon, index, NO_EDIT), logits)

    def answer(self, examples: TokenizedExamples, edits: Tensor, base_logits: Tensor | None) -> Tensor:
        """The base model's logits, except that the k-th labelled position predicts the cached label's k-th token."""
        assert base_logits is not None  # the cache routes by the base model's forward, which gives them
        labelled = aligned_labels(examples, self.cache.kind) != IGNORE_INDEX
        step = (labelled.cumsum(1) - 1).clamp(0, self.label_ids.shape[1] - 1)
        label_ids = self.label_ids.to(edits.device)[edits]
        tokens = label_ids.gather(1, step)
        cached = torch.zeros_like(base_logits).scatter_(2, tokens[..., None], CACHED_MARGIN)
        return torch.where(labelled[..., None], cached, base_logits)
