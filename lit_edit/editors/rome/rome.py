"""ROME (Meng et al. 2022): one rank-one update of one MLP output projection per fact, with no training.

k* is the projection's input at the subject's last token (averaged over sampled prefixes), v* the output that
makes the model predict the new target (found by optimisation, :mod:`lit_edit.mechanics.key_value`), and
W ← W + (v* − W k)(C⁻¹k*)ᵀ / ((C⁻¹k*)ᵀk) with C = E[kkᵀ] estimated once per model and layer
(:mod:`lit_edit.mechanics.key_statistics`). The averaged k* sets which keys the update touches; k, the key of the edit
prompt itself, is the one mapped exactly to v*, as in ROME's released code. (With k* in both places, the paper's
formula, the prompt's own output misses v* by W(k − k*), which cost SmolLM2 about one edit in fifteen; BENCHMARKS
§10.) Several edits in a batch are written one after the other. What ROME shares with MEMIT is
:class:`~lit_edit.editors.locating.LocatingEditor`.
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
    FactRequest,
    TargetOptimisation,
    current_values,
    fact_rows,
    rank_one_update,
    subject_keys,
)
from lit_edit.mechanics.model_layout import LayoutSpec
from lit_edit.models import ModelSpec
from lit_edit.tracing import LayerSelection


class ROME(LocatingEditor):
    """Rank-one model editing of one layer's MLP output projection."""

    layers_setting = "layer"

    def __init__(self, model: ModelSpec | None = None, layer: int = 5, layout: LayoutSpec | None = None,
                 statistics: KeyStatisticsSpec | None = None, target: TargetOptimisation | None = None,
                 prefixes: ContextPrefixes | None = None, max_condition: float = 1.0e6, max_length: int = 128,
                 layer_selection: LayerSelection | None = None, cache_targets: bool = False) -> None:
        """
        Args:
            layer: the block whose MLP output projection is rewritten (causal tracing says where facts live).
            layout: where the blocks and MLPs are (default: found from the model's structure).
            statistics: the text C = E[kkᵀ] is estimated from.
            target: the search for v*.
            prefixes: the sampled prefixes k* and v* are averaged over.
            max_condition: C's largest condition number before a ridge is added (with a warning).
            layer_selection: choose ``layer`` by causal tracing instead (the layer whose MLP output at the subject's
                last token restores most of the answer; :class:`lit_edit.tracing.LayerSelection`).
            cache_targets: keep each v* searched on the unedited model under ``checkpoints/targets/`` and reuse it
                (:mod:`lit_edit.mechanics.target_cache`); a reused target's edit time leaves out the search.
        """
        super().__init__(model, [layer], layout, statistics, target, prefixes, max_condition, max_length,
                         layer_selection, cache_targets)
        self.save_hyperparameters()
        self.layer = self.layers[0]

    @builds_on_weights
    def edit(self, batch: EditBatch, on: EditedModel | None = None) -> EditedModel:
        params: dict[str, Tensor] = {}
        for request in self.requests(batch):
            params = self.with_delta(self.layer, params, self.rank_one_delta(request, params))
        return EditedModel(self.model, self.kind, params)

    def rank_one_delta(self, request: FactRequest, params: dict[str, Tensor]) -> Tensor:
        """ΔW (out, in) that writes one fact into the model as edited by ``params``."""
        module = self.layout.mlp_out(self.layer)
        rows = fact_rows(self.prompts, [request], self.prefixes()).to(self.device)
        averaged, own = subject_keys(self.model, params, module, rows)
        target = self.searched_targets(self.layout.mlp_out_name(self.layer), [request], params)
        weight = self.weight(self.layer, params).float()
        bias = None if getattr(module, "bias", None) is None else module.bias.float()
        residual = target - current_values(weight, bias, own)
        with torch.no_grad():
            direction = torch.linalg.solve(self.key_moment(self.layer), averaged[0].double())
        return rank_one_update(own[0], residual[0], direction)
