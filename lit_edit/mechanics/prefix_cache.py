"""Key/value states of edit descriptors, read once and reused by every query that falls under the same edit.

SERAC's counterfactual model reads ``descriptor + query``. At inference the descriptor part is the same for every
query routed to an edit, so its attention keys and values are computed once (without the LM head: no logits are
needed over the descriptor), kept in a least-recently-used store bounded in bytes, and each query then costs about
a forward pass over its own tokens. Keys are stored as computed at positions ``0 .. L-1``; a batch of prefixes of
different lengths is left-padded (masked), and each query continues at position ``L`` of its own prefix, so the
logits equal those of the concatenated sequence.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from transformers import PreTrainedConfig
from transformers.cache_utils import DynamicCache

#: One descriptor's states: per layer ``(keys, values)``, each ``[kv_heads, length, head_dim]``.
PrefixStates = tuple[tuple[Tensor, Tensor], ...]


class PrefixCache:
    """Least-recently-used store of :data:`PrefixStates` keyed by the descriptor's token ids, within ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._states: OrderedDict[tuple[int, ...], PrefixStates] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, ids: tuple[int, ...]) -> bool:
        return ids in self._states

    def get(self, ids: tuple[int, ...]) -> PrefixStates:
        self._states.move_to_end(ids)
        return self._states[ids]

    def put(self, ids: tuple[int, ...], states: PrefixStates) -> None:
        size = _size(states)
        if size > self.max_bytes:
            return  # larger than the whole budget: used once, never stored
        if ids in self._states:
            self.bytes -= _size(self._states.pop(ids))
        while self._states and self.bytes + size > self.max_bytes:
            self.bytes -= _size(self._states.popitem(last=False)[1])
        self._states[ids] = states
        self.bytes += size

    def clear(self) -> None:
        self._states.clear()
        self.bytes = 0


def _size(states: PrefixStates) -> int:
    return sum(t.numel() * t.element_size() for layer in states for t in layer)


@torch.no_grad()
def read_prefixes(lm: nn.Module, prefixes: Sequence[Sequence[int]], pad: int,
                  params: dict[str, Tensor] | None = None) -> list[PrefixStates]:
    """The key/value states of each prefix (right-padded into one batch), with ``params`` substituted if given (the
    whole model then runs; otherwise the decoder only, no LM head). A prefix may be empty.

    Raises ``TypeError`` for a model whose cache does not hold per-layer keys and values (e.g. recurrent layers).
    """
    device = next(lm.parameters()).device
    width = max(1, max(len(p) for p in prefixes))
    ids = torch.full((len(prefixes), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prefixes):
        ids[i, : len(p)] = torch.tensor(list(p), dtype=torch.long, device=device)
        mask[i, : len(p)] = 1
    inputs = {"input_ids": ids, "attention_mask": mask, "use_cache": True}
    if params:
        cache = functional_call(lm, params, args=(), kwargs=inputs, strict=False).past_key_values
    else:
        cache = lm.base_model(**inputs).past_key_values
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        raise TypeError(f"{type(cache).__name__} does not hold per-layer keys and values")
    # Right padding never changes the real tokens' states (causal attention): keep each row's first len(p).
    return [tuple((layer.keys[i, :, : len(p)].clone(), layer.values[i, :, : len(p)].clone()) for layer in layers)
            for i, p in enumerate(prefixes)]


@dataclass
class StackedPrefixes:
    """Several rows' prefix states in one batch, left-padded to the longest (the pads masked), so that any subset of
    rows can be continued without stacking again."""

    keys: list[Tensor]  # per layer [rows, kv_heads, longest, head_dim]
    values: list[Tensor]
    lengths: Tensor  # [rows] each row's own prefix length

    @classmethod
    def stack(cls, states: Sequence[PrefixStates]) -> StackedPrefixes:
        lengths = [layers[0][0].shape[1] for layers in states]
        longest = max(lengths)
        keys, values = [], []
        for index in range(len(states[0])):
            gaps = [(0, 0, longest - length, 0) for length in lengths]  # left-pad the length dimension
            keys.append(torch.stack([nn.functional.pad(layers[index][0], gap) for layers, gap in zip(states, gaps, strict=True)]))
            values.append(torch.stack([nn.functional.pad(layers[index][1], gap) for layers, gap in zip(states, gaps, strict=True)]))
        return cls(keys, values, torch.tensor(lengths, device=keys[0].device))

    def select(self, rows: Tensor) -> StackedPrefixes:
        return StackedPrefixes([k[rows] for k in self.keys], [v[rows] for v in self.values], self.lengths[rows])

    def continuation(self, config: PreTrainedConfig, attention_mask: Tensor) -> dict[str, Any]:
        """Model inputs (besides ``input_ids``) that continue each right-padded row after its own prefix: the states as
        a cache, the mask over both, and positions counted on from each prefix's length, so the logits equal those
        of the concatenated sequence."""
        cache = DynamicCache(config=config)
        for index, (keys, values) in enumerate(zip(self.keys, self.values, strict=True)):
            cache.update(keys, values, index)
        longest = self.keys[0].shape[2]
        device = attention_mask.device
        lengths = self.lengths.to(device)
        past_mask = (torch.arange(longest, device=device) >= longest - lengths[:, None]).to(attention_mask.dtype)
        positions = lengths[:, None] + torch.arange(attention_mask.shape[1], device=device)
        return {"attention_mask": torch.cat([past_mask, attention_mask], dim=1), "position_ids": positions,
                "past_key_values": cache, "use_cache": True}


def read_stacked(lm: nn.Module, prefixes: Sequence[Sequence[int]],
                 params: dict[str, Tensor] | None = None) -> StackedPrefixes | None:
    """The prefixes' states stacked to continue from; ``None`` when every prefix is empty or the model cannot continue
    from read states (its forward takes no ``position_ids``, or its cache holds no per-layer keys and values), so
    the caller runs whole sequences instead."""
    if not any(prefixes) or "position_ids" not in inspect.signature(lm.forward).parameters:
        return None
    try:
        return StackedPrefixes.stack(read_prefixes(lm, prefixes, 0, params))
    except TypeError:
        return None


def continue_after_prefixes(lm: nn.Module, states: Sequence[PrefixStates], input_ids: Tensor,
                            attention_mask: Tensor) -> Tensor:
    """Logits ``[rows, seq, vocab]`` of each (right-padded) query row read after its own prefix's states."""
    inputs = StackedPrefixes.stack(states).continuation(lm.config, attention_mask)
    return lm(input_ids=input_ids, **inputs).logits
