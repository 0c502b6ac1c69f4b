"""Key/value states of edit descriptors, read once and reused by every query that falls under the same edit.

SERAC's counterfactual model reads ``descriptor + query``. At inference the descriptor part is the same for every
query routed to an edit, so its attention keys and values are computed once (without the LM head: no logits are
needed over the descriptor), kept in a least-recently-used store bounded in bytes, and each query then costs about
a forward pass over its own tokens. Keys are stored as computed at positions ``0 .. L-1``; a batch of prefixes of
different lengths is left-padded (masked), and each query continues at position ``L`` of its own prefix, so the
logits equal those of the concatenated sequence.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn
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
def read_prefixes(lm: nn.Module, prefixes: Sequence[Sequence[int]], pad: int) -> list[PrefixStates]:
    """The key/value states of each prefix (right-padded into one batch; the decoder only, no LM head).

    Raises ``TypeError`` for a model whose cache does not hold per-layer keys and values (e.g. recurrent layers).
    """
    device = next(lm.parameters()).device
    width = max(len(p) for p in prefixes)
    ids = torch.full((len(prefixes), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prefixes):
        ids[i, : len(p)] = torch.tensor(list(p), dtype=torch.long, device=device)
        mask[i, : len(p)] = 1
    cache = lm.base_model(input_ids=ids, attention_mask=mask, use_cache=True).past_key_values
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        raise TypeError(f"{type(cache).__name__} does not hold per-layer keys and values")
    # Right padding never changes the real tokens' states (causal attention): keep each row's first len(p).
    return [tuple((layer.keys[i, :, : len(p)].clone(), layer.values[i, :, : len(p)].clone()) for layer in layers)
            for i, p in enumerate(prefixes)]


def continue_after_prefixes(lm: nn.Module, states: Sequence[PrefixStates], input_ids: Tensor,
                            attention_mask: Tensor) -> Tensor:
    """Logits ``[rows, seq, vocab]`` of each (right-padded) query row read after its own prefix's states."""
    lengths = [layers[0][0].shape[1] for layers in states]
    longest = max(lengths)
    cache = DynamicCache(config=lm.config)
    for index in range(len(states[0])):
        keys, values = [], []
        for layers, length in zip(states, lengths, strict=True):
            key, value = layers[index]
            gap = (0, 0, longest - length, 0)  # left-pad the length dimension
            keys.append(nn.functional.pad(key, gap))
            values.append(nn.functional.pad(value, gap))
        cache.update(torch.stack(keys), torch.stack(values), index)
    device = input_ids.device
    past_mask = torch.zeros((len(states), longest), dtype=attention_mask.dtype, device=device)
    for row, length in enumerate(lengths):
        past_mask[row, longest - length:] = 1
    offsets = torch.tensor(lengths, device=device)[:, None]
    positions = offsets + torch.arange(input_ids.shape[1], device=device)
    return lm(input_ids=input_ids, attention_mask=torch.cat([past_mask, attention_mask], dim=1),
              position_ids=positions, past_key_values=cache, use_cache=True).logits
