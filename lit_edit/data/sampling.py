"""Seeded shuffling of training edits that a run resumed mid-epoch can pick up where it stopped.

Lightning restores the step count and optimizer state from a checkpoint, but a plain shuffled DataLoader
starts its epoch again from the first batch, so a resumed run would see some edits twice and others not at
all. This sampler's order is a function of (seed, epoch) alone, so it can skip what was already trained on.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import RandomSampler, Sampler


class ResumableShuffle(Sampler[int]):
    """Epoch ``e`` is in the order a ``DataLoader(shuffle=True, generator=seeded(seed))`` gives in its ``e``-th pass."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every epoch, the resumed one included."""
        self.epoch = epoch

    def resume_after(self, examples: int) -> None:
        """Leave out, on the next pass only, the first ``examples`` indices of the epoch (already trained on)."""
        self._skip = examples

    def order(self, epoch: int) -> list[int]:
        # Replays the draws a re-iterated shuffling DataLoader makes from its one generator (a base seed for its
        # workers, then the permutation), so runs from before this sampler existed see the same order.
        generator = torch.Generator().manual_seed(self.seed)
        shuffle = RandomSampler(range(self.size), generator=generator)
        for _ in range(epoch + 1):
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            order = list(shuffle)
        return order

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        return iter(self.order(self.epoch)[skip:])

    def __len__(self) -> int:
        return self.size  # the epoch's length: Lightning counts the resumed epoch's batches from the checkpoint
