"""Samplers that deal whole edit batches out to ranks: seeded, resumable shuffling for training, and an exact
split of the evaluation batches.

Lightning restores the step count and optimizer state from a checkpoint, but a plain shuffled DataLoader
starts its epoch again from the first batch, so a resumed run would see some edits twice and others not at
all. This sampler's order is a function of (seed, epoch) alone, so it can skip what was already trained on.

Across ranks it deals out whole batches: the epoch's order is cut into batches of ``batch_size`` edits and
rank ``r`` of ``W`` gets batches ``r, r + W, r + 2W, ...``. So one optimizer step of W ranks trains on exactly
the batches that one process accumulating W batches per step would see, in the same groups (an edit batch is
edited together, so regrouping its edits would change the training problem, not just its order).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DistributedSampler, RandomSampler


class ResumableShuffle(DistributedSampler):
    """Epoch ``e`` is in the order a ``DataLoader(shuffle=True, generator=seeded(seed))`` gives in its ``e``-th pass.

    A :class:`DistributedSampler` only so that Lightning uses it as it is instead of wrapping it in another
    distributed sampler (which would reshuffle and regroup the batches).
    """

    def __init__(self, size: int, seed: int, batch_size: int = 1, num_replicas: int = 1, rank: int = 0) -> None:
        # DistributedSampler.__init__ wants a dataset and an initialised process group; nothing of it is used.
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.size, self.seed, self.batch_size = size, seed, batch_size
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every epoch, the resumed one included."""
        self.epoch = epoch

    def resume_after(self, examples: int) -> None:
        """Leave out, on the next pass only, this rank's first ``examples`` indices of the epoch (already trained on)."""
        self._skip = examples

    def order(self, epoch: int) -> list[int]:
        """The epoch's global order, before it is dealt out to ranks."""
        # Replays the draws a re-iterated shuffling DataLoader makes from its one generator (a base seed for its
        # workers, then the permutation), so runs from before this sampler existed see the same order.
        generator = torch.Generator().manual_seed(self.seed)
        shuffle = RandomSampler(range(self.size), generator=generator)
        for _ in range(epoch + 1):
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            order = list(shuffle)
        return order

    @property
    def batches_per_rank(self) -> int:
        """Whole batches each rank gets per epoch; the remainder, too few for every rank, is left out."""
        return self.size // self.batch_size // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        order, size = self.order(self.epoch), self.batch_size
        mine = [order[(k * self.num_replicas + self.rank) * size:][:size] for k in range(self.batches_per_rank)]
        return iter([index for batch in mine for index in batch][skip:])

    def __len__(self) -> int:
        return self.batches_per_rank * self.batch_size  # the epoch's length: Lightning counts the resumed epoch's batches


class DealtBatches(DistributedSampler):
    """Evaluation: rank ``r`` of ``W`` gets batches ``r, r + W, r + 2W, ...`` of ``batches``, in order.

    Unlike Lightning's default :class:`DistributedSampler`, it pads nothing: a padded batch would be edited and
    scored twice and counted twice in the run's metrics. Ranks may get one batch more or less than each other;
    evaluation syncs only at the end of the epoch, so that is safe.
    """

    def __init__(self, batches: int, num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.batches, self.num_replicas, self.rank = batches, num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        """The order does not depend on the epoch."""

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.batches, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.batches, self.num_replicas))
