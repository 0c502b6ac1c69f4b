"""MEMIT (Meng et al. 2023): thousands of facts written at once, spread over the MLPs of several layers.

For each fact, a target hidden state z* at the last edited layer's output is found by optimisation (as ROME finds
v*). Then layer by layer, from the first, the remaining gap between z* and the current hidden state is divided
among the layers still to edit, and each layer's share is written by one least-squares update
ΔW = R Kᵀ(λC + KKᵀ)⁻¹ over all facts' keys K: the keys of every fact at that layer, read with the earlier
layers already edited.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_edit.data.batch import EditBatch
from lit_edit.editors.locating import ContextPrefixes, LocatingEditor
from lit_edit.mechanics.edit_result import builds_on_weights
from lit_edit.mechanics.edited_model import EditedModel
from lit_edit.mechanics.key_statistics import KeyStatisticsSpec
from lit_edit.mechanics.key_value import (
    FactRows,
    TargetOptimisation,
    captured,
    fact_rows,
    least_squares_update,
    mean_per_fact,
    run_until,
)
from lit_edit.mechanics.model_layout import LayoutSpec, weight_orientation
from lit_edit.mechanics.settings import require_at_least, require_positive
from lit_edit.models import ModelSpec
from lit_edit.tracing import LayerSelection


class MEMIT(LocatingEditor):
    """Mass editing of the MLP output projections of ``layers``."""

    def __init__(self, model: ModelSpec | None = None, layers: list[int] | None = None,
                 layout: LayoutSpec | None = None, statistics: KeyStatisticsSpec | None = None,
                 target: TargetOptimisation | None = None, prefixes: ContextPrefixes | None = None,
                 moment_weight: float | None = None, facts_per_chunk: int = 32, max_condition: float = 1.0e6,
                 max_length: int = 128, layer_selection: LayerSelection | None = None,
                 cache_targets: bool = False) -> None:
        """
        Args:
            layers: the blocks whose MLP output projections share each edit (ascending; the last one holds z*).
            prefixes: the contexts k* and z* are averaged over; by default MEMIT's own, five sampled prefixes of
                10 tokens (ROME samples ten), so a fact's search batch has 6 rows instead of 11.
            moment_weight: λ, how strongly the keys summarised by C keep their old values against the new facts.
                A key k adds kᵀ(λC)⁻¹k ≈ width/λ to the solve, so λ is relative to the MLP's width: by default
                width × 0.92, the ratio of MEMIT's λ = 15,000 to GPT-J's 16,384-wide MLP.
            facts_per_chunk: facts whose targets are searched for (and keys read) in one batch.
            layer_selection: choose ``layers`` by causal tracing instead: the traced layer and ``neighbours`` on
                each side (:class:`lit_edit.tracing.LayerSelection`).
            cache_targets: keep each z* under ``checkpoints/targets/`` and reuse it
                (:mod:`lit_edit.mechanics.target_cache`): an edit of thousands of facts that is stopped resumes at the
                facts it had not reached, and facts written one at a time before are not searched for again. A
                reused target's edit time leaves out the search.
        """
        layers = sorted(layers if layers is not None else [3, 4, 5, 6, 7])
        prefixes = prefixes or ContextPrefixes(lengths=[10], per_length=5)
        if moment_weight is not None:
            require_positive(type(self).__name__, "moment_weight", moment_weight)
        require_at_least(type(self).__name__, "facts_per_chunk", facts_per_chunk, 1)
        super().__init__(model, layers, layout, statistics, target, prefixes, max_condition, max_length,
                         layer_selection, cache_targets)
        self.save_hyperparameters()
        width = self.key_moment_width(self.layers[0])
        self.moment_weight = moment_weight if moment_weight is not None else width * 15000.0 / 16384.0
        self.facts_per_chunk = facts_per_chunk

    @builds_on_weights
    def edit(self, batch: EditBatch, on: EditedModel | None = None) -> EditedModel:
        requests = self.requests(batch)
        chunks = [requests[i: i + self.facts_per_chunk] for i in range(0, len(requests), self.facts_per_chunk)]
        rows = [fact_rows(self.prompts, chunk, self.prefixes()).to(self.device) for chunk in chunks]
        targets = self.searched_targets(self.layout.block_name(self.layers[-1]), requests, {}, self.facts_per_chunk)
        params: dict[str, Tensor] = {}
        for done, layer in enumerate(self.layers):
            keys, states = self.keys_and_states(layer, params, rows)
            residual = (targets - states) / (len(self.layers) - done)
            with torch.no_grad():
                regulariser = self.moment_weight * self.key_moment(layer)
                delta = least_squares_update(keys, residual, regulariser)
            params = self.with_delta(layer, params, delta)
        return EditedModel(self.model, self.kind, params)

    def key_moment_width(self, layer: int) -> int:
        """The width of ``layer``'s keys (the MLP's inner dimension)."""
        name = self.layout.mlp_out_weight_name(layer)
        weight = self.base_params()[name]
        return weight.shape[1] if weight_orientation(self.layout.mlp_out(layer)) == "out_in" else weight.shape[0]

    def keys_and_states(self, layer: int, params: dict[str, Tensor], rows: list[FactRows]) -> tuple[Tensor, Tensor]:
        """All facts' keys at ``layer`` and hidden states at the last edited layer, under the edits so far (one
        forward pass per chunk reads both)."""
        keys, states = [], []
        last = self.layout.blocks[self.layers[-1]]
        for chunk in rows:
            with captured(self.layout.mlp_out(layer)) as key_seen, captured(last) as state_seen, torch.no_grad():
                run_until(self.model, params, last, input_ids=chunk.examples.input_ids,
                          attention_mask=chunk.examples.attention_mask)
            keys.append(mean_per_fact(key_seen["input"][torch.arange(len(chunk.fact)), chunk.subject_position], chunk))
            states.append(state_seen["output"][chunk.unprefixed, chunk.subject_position[chunk.unprefixed]].float())
        return torch.cat(keys), torch.cat(states)
