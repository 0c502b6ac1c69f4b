"""What ROME and MEMIT share (:class:`LocatingEditor`): the edited MLPs found in the model's layout, the sampled
prefixes that keys and targets are averaged over, the key statistics C per layer, and the search for target values.

The locating editors live in their own folders (:mod:`lit_edit.editors.rome`, :mod:`lit_edit.editors.memit`) and
both build on this class; the key-value mechanics they call are :mod:`lit_edit.mechanics.key_value`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from lit_edit.data.batch import EditBatch
from lit_edit.editors.base import Editor
from lit_edit.errors import ConfigurationError
from lit_edit.mechanics.edited_model import EditRefusedError
from lit_edit.mechanics.key_statistics import KeyStatisticsSpec, estimate_key_moments, well_conditioned
from lit_edit.mechanics.key_value import (
    FactRequest,
    TargetOptimisation,
    context_prefixes,
    essence_rows,
    fact_rows,
    optimise_shift,
)
from lit_edit.mechanics.model_layout import LayoutSpec, ModelLayout, as_out_in, weight_orientation
from lit_edit.mechanics.settings import require_at_least, require_layers, require_number_at_least
from lit_edit.mechanics.target_cache import TargetCache
from lit_edit.models import ModelSpec
from lit_edit.tracing import LayerSelection


@dataclass
class ContextPrefixes:
    """The random prefixes that k* and v* are averaged over (the ROME paper: ten of 5 tokens and ten of 10; the default
    here: five of each; MEMIT's own: five of 10)."""

    lengths: list[int] = field(default_factory=lambda: [5, 10])
    """Token lengths of the sampled prefixes."""
    per_length: int = 5
    """Prefixes sampled per length (0: the bare prompt only)."""
    seed: int = 0

    def validate(self, owner: str) -> None:
        """Refuse settings out of range, naming them as ``owner``'s ``prefixes``."""
        require_at_least(owner, "prefixes.per_length", self.per_length, 0)
        for length in self.lengths:
            require_at_least(owner, "prefixes.lengths[]", length, 1)


def validate_statistics(owner: str, spec: KeyStatisticsSpec) -> None:
    """Refuse key statistics settings out of range (or a corpus file that is not there), naming them as ``owner``'s
    ``statistics``: C is estimated at the first edit, too late to find out."""
    require_at_least(owner, "statistics.samples", spec.samples, 1)
    require_at_least(owner, "statistics.tokens", spec.tokens, 2)  # a sampled passage: a start token and more
    require_at_least(owner, "statistics.batch_size", spec.batch_size, 1)
    require_at_least(owner, "statistics.save_every", spec.save_every, 1)
    if spec.corpus and not Path(spec.corpus).is_file():
        raise ConfigurationError(f"{owner}.statistics.corpus: no file at {spec.corpus} (init_args.statistics.corpus "
                                 f"of the {owner} config: a text file, one passage per line, or null to sample text)")


class LocatingEditor(Editor):
    """What ROME and MEMIT share: the layout, the prefixes, the key statistics C per layer, the target search."""

    unscored_hparams = Editor.unscored_hparams | {"cache_targets"}
    #: The setting that names the edited layers, in messages (ROME edits one: ``layer``).
    layers_setting: ClassVar[str] = "layers"

    def __init__(self, model: ModelSpec | None, layers: list[int], layout: LayoutSpec | None,
                 statistics: KeyStatisticsSpec | None, target: TargetOptimisation | None,
                 prefixes: ContextPrefixes | None, max_condition: float, max_length: int,
                 layer_selection: LayerSelection | None = None, cache_targets: bool = False) -> None:
        owner = type(self).__name__
        layers_setting = self.layers_setting
        if layer_selection is None:
            require_layers(owner, layers_setting, layers)
        statistics, target = statistics or KeyStatisticsSpec(), target or TargetOptimisation()
        prefixes = prefixes or ContextPrefixes()
        validate_statistics(owner, statistics)
        target.validate(owner)
        prefixes.validate(owner)
        require_number_at_least(owner, "max_condition", max_condition, 1.0)  # a condition number
        super().__init__(model, max_length)
        if self.kind != "causal":
            raise ConfigurationError(f"{owner} edits causal LMs (a subject's last token feeds every later one), got "
                                     f"model.kind {self.kind!r}")
        self.layout = ModelLayout(self.model, layout)
        if layer_selection is not None:  # causal tracing decides, once, before anything depends on the layers
            layers = layer_selection.select_layers(self.model, self.tokenizer, self.layout,
                                                    top=self.layout.num_layers - 2)
        require_layers(owner, layers_setting, layers, self.layout.num_layers)
        if max(layers) >= self.layout.num_layers - 1:
            # The new value is written at the subject's last token; only later blocks' attention carries it to the
            # prompt's last position, where the answer is read. Written into the last block, it reaches no answer.
            raise ConfigurationError(
                f"{owner}.{layers_setting} names layer {max(layers)}, the model's last block: an edit there changes "
                f"the subject's own position only and no answer; edit blocks below {self.layout.num_layers - 1} "
                f"(init_args.{layers_setting} of the {owner} config)")
        self.layers = layers
        self.editable_names = [self.layout.mlp_out_weight_name(layer) for layer in layers]
        self.statistics = statistics
        self.target = target
        self.prefix_spec = prefixes
        self.max_condition = max_condition
        self.cache_targets = cache_targets
        self.target_caches: dict[str, TargetCache] = {}
        self._prefixes: list[str] | None = None
        self._moments: dict[int, Tensor] = {}

    def prefixes(self) -> list[str]:
        if self._prefixes is None:
            spec = self.prefix_spec
            self._prefixes = [text for i, length in enumerate(spec.lengths)
                              for text in context_prefixes(self.model, self.tokenizer, spec.per_length, length,
                                                           spec.seed + i)]
        return self._prefixes

    def key_moment(self, layer: int) -> Tensor:
        """C for ``layer`` in float64, estimated once (and cached on disk) the first time it is needed, and
        regularised once if ill-conditioned (one warning, not one per edit)."""
        if layer not in self._moments:
            estimated = estimate_key_moments(self.model, self.tokenizer, self.layout, self.layers, self.statistics)
            self._moments.update({
                key: well_conditioned(moment, self.max_condition, f"C of {self.layout.mlp_out_name(key)}")
                for key, moment in estimated.items() if key not in self._moments})
        return self._moments[layer].to(self.device)

    def searched_targets(self, module_name: str, requests: list[FactRequest], params: dict[str, Tensor],
                         facts_per_search: int = 1) -> Tensor:
        """Per fact, the output of ``module_name`` at the subject's last token of its own prompt that makes the model
        predict the target (ROME's v*, MEMIT's z*), searched for ``facts_per_search`` facts in one batch.

        With ``cache_targets``, targets searched on the unedited model (``params`` empty) are read from and written to
        :class:`~lit_edit.mechanics.target_cache.TargetCache`, each as soon as its batch is done.
        """
        module = self.model.get_submodule(module_name)
        cache = None
        if self.cache_targets and not params:
            if module_name not in self.target_caches:
                self.target_caches[module_name] = TargetCache(self.model, module_name, self.target, self.prefixes(),
                                                              self.prompts.max_length)
            cache = self.target_caches[module_name]
        found = {i: value for i, request in enumerate(requests)
                 if cache is not None and (value := cache.load(request)) is not None}
        missing = [i for i in range(len(requests)) if i not in found]
        for start in range(0, len(missing), facts_per_search):
            chosen = missing[start: start + facts_per_search]
            searched = [requests[i] for i in chosen]
            rows = fact_rows(self.prompts, searched, self.prefixes()).to(self.device)
            value, shift = optimise_shift(self.model, params, self.kind, module, rows,
                                          essence_rows(self.tokenizer, searched, self.device), self.target)
            for i, request, target in zip(chosen, searched, value + shift, strict=True):
                found[i] = target
                if cache is not None:
                    cache.save(request, target)
        return torch.stack([found[i].to(self.device) for i in range(len(requests))])

    def requests(self, batch: EditBatch) -> list[FactRequest]:
        if len(batch.records) != len(batch):
            raise EditRefusedError(f"{self.name} edits records (prompt, subject, target): the batch has {len(batch)} "
                                   f"edits but {len(batch.records)} records; the model was left unchanged")
        return [FactRequest.from_record(record) for record in batch.records]

    def weight(self, layer: int, params: dict[str, Tensor]) -> Tensor:
        """The layer's projection as an (out, in) matrix, with the edits so far."""
        name = self.layout.mlp_out_weight_name(layer)
        weight = params.get(name, self.base_params()[name])
        return as_out_in(weight, weight_orientation(self.layout.mlp_out(layer)))

    def with_delta(self, layer: int, params: dict[str, Tensor], delta: Tensor) -> dict[str, Tensor]:
        """``params`` with ``delta`` (out, in) added to the layer's weight, in the module's own layout and dtype."""
        name = self.layout.mlp_out_weight_name(layer)
        weight = params.get(name, self.base_params()[name]).detach()
        stored = delta if weight_orientation(self.layout.mlp_out(layer)) == "out_in" else delta.T
        return {**params, name: weight + stored.to(weight.dtype)}
