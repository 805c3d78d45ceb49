"""BucketBatchSampler: batches of windows of similar length, sharded across DDP ranks, resumable mid-epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of windows of similar cost, for little padding.

    Each epoch: shuffle the windows (seeded by ``seed`` and the epoch), take pools of
    ``batch_size * bucket_factor``, sort each pool by ``lengths`` (a per-window cost, e.g.
    :meth:`PreparedUnits.costs`), cut it into batches, and shuffle the order of all batches. With
    ``world_size > 1`` rank r gets batches r, r + world_size, ...; every rank gets the same number:
    with ``drop_last`` the last batches are dropped, else the first are repeated (as torch's
    DistributedSampler does). ``drop_last`` also drops an incomplete batch. Call ``set_epoch``
    each epoch (Lightning does). ``skip`` leaves out the first batches of the next pass only (a run resumed
    mid-epoch; ``__len__`` stays the whole epoch's, which is what Lightning counts the epoch against).
    """

    def __init__(self, lengths: Sequence[float] | np.ndarray, batch_size: int, shuffle: bool = True, seed: int = 0,
                 bucket_factor: int = 50, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        if batch_size < 1 or bucket_factor < 1:
            raise ValueError(f"batch_size and bucket_factor must be >= 1, got {batch_size} and {bucket_factor}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed, self.bucket_factor = batch_size, shuffle, seed, bucket_factor
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch = 0
        self.skip = 0  # this rank's batches the next pass leaves out: those a resumed run has already trained on
        # Lightning calls set_epoch on `dataloader.sampler` and `dataloader.batch_sampler.sampler`, not on the
        # batch sampler itself: this attribute is how each epoch reaches it.
        self.sampler = _EpochHook(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        pool = self.batch_size * self.bucket_factor
        batches = []
        for p in range(0, n, pool):
            chunk = order[p : p + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[b : b + self.batch_size] for b in range(0, len(chunk), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _per_rank(self, n_batches: int) -> int:
        return n_batches // self.world_size if self.drop_last else math.ceil(n_batches / self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        total = self._per_rank(len(batches)) * self.world_size
        if total > len(batches):  # pad by repeating the first batches
            batches += (batches * math.ceil(total / max(len(batches), 1)))[: total - len(batches)]
        skip, self.skip = self.skip, 0  # only the resumed epoch starts late
        for batch in batches[self.rank : total : self.world_size][skip:]:
            yield batch.tolist()

    def __len__(self) -> int:
        n, b = len(self.lengths), self.batch_size
        pool = b * self.bucket_factor
        n_batches = (n // pool) * self.bucket_factor + math.ceil((n % pool) / b)
        if self.drop_last and n % b:
            n_batches -= 1
        return self._per_rank(n_batches)


class _EpochHook:
    def __init__(self, owner: BucketBatchSampler):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)
