"""Patcher: cut byte sequences into patches, vectorised over the batch (no loop over bytes).

Modes (a patch *starts* at byte t when):

* ``entropy``    H_t > threshold (BLT's global constraint);
* ``monotonic``  H_t - H_{t-1} > threshold (BLT's approximate monotonic constraint);
* ``both``       H_t > threshold and H_t - H_{t-1} > relative_threshold: a rise that ends high.
  Global alone cuts every byte of a long high-entropy run; monotonic alone cuts on small
  rises in easy text. Requiring both keeps only the starts of hard stretches.
* ``space``      byte t is not space-like and byte t-1 is (BLT: space-like = ASCII and not a
  letter or digit), so a word keeps its trailing spaces and punctuation;
* ``static``     every ``patch_size`` bytes.

Byte 0 always starts a patch (there is no BOS inside the patched stream), and
``max_patch_length`` splits longer patches into pieces of that length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blt.entropy import MAX_ENTROPY
from blt.ids import OFFSET

MODES = ("entropy", "monotonic", "both", "space", "static")
ENTROPY_MODES = ("entropy", "monotonic", "both")


@dataclass
class Patches:
    starts: torch.Tensor  # (B, L) bool, True where a patch begins
    ids: torch.Tensor  # (B, L) int64 patch index of each byte, -1 at padding
    lengths: torch.Tensor  # (B, P) int64 bytes per patch, 0 past the row's last patch
    counts: torch.Tensor  # (B,) patches per row

    def mask(self) -> torch.Tensor:
        """(B, P) True for real patches."""
        return self.lengths > 0


def patches_from_starts(starts: torch.Tensor, lengths: torch.Tensor) -> Patches:
    """Patch bookkeeping from a start mask; starts beyond a row's length are ignored."""
    batch, length = starts.shape
    inside = torch.arange(length, device=starts.device) < lengths[:, None]
    starts = starts & inside
    ids = (starts.long().cumsum(1) - 1).masked_fill(~inside, -1)
    counts = starts.sum(1)
    width = int(counts.max()) if batch else 0
    patch_lengths = torch.zeros(batch, width + 1, dtype=torch.long, device=starts.device)
    patch_lengths.scatter_add_(1, ids + 1, inside.long())  # slot 0 collects padding
    return Patches(starts, ids, patch_lengths[:, 1:], counts)


def space_like(ids: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: ASCII bytes that are neither letters nor digits."""
    b = ids - OFFSET
    alnum = ((b >= 48) & (b <= 57)) | ((b >= 65) & (b <= 90)) | ((b >= 97) & (b <= 122))
    return (b >= 0) & (b < 128) & ~alnum


@dataclass
class Patcher:
    mode: str = "entropy"
    threshold: float | None = None  # entropy / monotonic / both (absolute part), nats
    relative_threshold: float = 0.0  # both: the required rise, nats
    patch_size: int = 4  # static
    max_patch_length: int | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown patching mode {self.mode!r}; choose one of {MODES}")
        if self.mode in ENTROPY_MODES and self.threshold is not None:
            check_threshold(self.threshold, self.mode)
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        if self.max_patch_length is not None and self.max_patch_length < 1:
            raise ValueError(f"max_patch_length must be >= 1, got {self.max_patch_length}")

    @property
    def needs_entropies(self) -> bool:
        return self.mode in ENTROPY_MODES

    def starts(self, ids: torch.Tensor, entropies: torch.Tensor | None = None,
               threshold: float | None = None) -> torch.Tensor:
        """(B, L) bool patch starts before length masking and the max-length split."""
        threshold = self.threshold if threshold is None else threshold
        pos = torch.arange(ids.shape[1], device=ids.device)
        if ids.shape[1] == 0:
            return torch.zeros_like(ids, dtype=torch.bool)
        if self.mode in ENTROPY_MODES:
            if entropies is None or threshold is None:
                raise ValueError(f"{self.mode} patching needs entropies and a threshold")
            rise = entropies - torch.nn.functional.pad(entropies[:, :-1], (1, 0))
            if self.mode == "entropy":
                starts = entropies > threshold
            elif self.mode == "monotonic":
                starts = rise > threshold
            else:
                starts = (entropies > threshold) & (rise > self.relative_threshold)
        elif self.mode == "space":
            sl = space_like(ids)
            prev = torch.nn.functional.pad(sl[:, :-1], (1, 0))
            starts = prev & ~sl
        else:
            starts = (pos % self.patch_size == 0).expand_as(ids)
        starts = starts | (pos == 0)
        if self.max_patch_length is not None:
            last_start = torch.where(starts, pos, 0).cummax(dim=1).values
            starts = starts | ((pos - last_start) % self.max_patch_length == 0)
        return starts

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor, entropies: torch.Tensor | None = None,
                 threshold: float | None = None) -> Patches:
        return patches_from_starts(self.starts(ids, entropies, threshold), lengths)

    def calibrate(self, ids: torch.Tensor, lengths: torch.Tensor, entropies: torch.Tensor,
                  target_patch_size: float, iterations: int = 50, clamp: bool = False) -> float:
        """The threshold whose mean patch size over this sample is closest to the target.

        Mean patch size grows monotonically with the threshold, so bisection finds it. A target
        outside what any threshold can give raises ValueError, or, with ``clamp``, gets the
        threshold of the nearest reachable size.
        """
        if self.mode not in ENTROPY_MODES:
            raise ValueError(f"only entropy modes have a threshold to calibrate, not {self.mode!r}")
        total = int(lengths.sum())
        if total == 0:
            raise ValueError("cannot calibrate a threshold on an empty sample")

        def mean_size(th: float) -> float:
            return total / int(self(ids, lengths, entropies, th).counts.sum())

        # The widest thresholds check_threshold accepts: everything cut vs. only forced starts.
        hi = MAX_ENTROPY - 1e-4
        lo = -hi if self.mode == "monotonic" else -1e-6
        smallest, largest = mean_size(lo), mean_size(hi)
        if clamp and target_patch_size <= smallest:
            return lo
        if clamp and target_patch_size >= largest:
            return hi
        if not smallest <= target_patch_size <= largest:
            raise ValueError(f"target patch size {target_patch_size} is out of reach: on this sample, "
                             f"{self.mode} thresholds give mean patch sizes from {smallest:.3g} to {largest:.3g}")
        for _ in range(iterations):
            mid = (lo + hi) / 2
            if mean_size(mid) < target_patch_size:
                lo = mid
            else:
                hi = mid
        return lo if abs(mean_size(lo) - target_patch_size) <= abs(mean_size(hi) - target_patch_size) else hi


def check_threshold(threshold: float, mode: str) -> None:
    """Reject thresholds that are not numbers or under which no entropy can ever start a patch."""
    if not isinstance(threshold, int | float) or threshold != threshold or abs(threshold) == float("inf"):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    limit = MAX_ENTROPY
    if threshold >= limit:
        raise ValueError(f"threshold {threshold} >= ln(260) = {limit:.3f} nats, the largest entropy a byte "
                         f"can have: {mode} patching would place no boundary at all")
    if mode == "monotonic" and threshold <= -limit:
        raise ValueError(f"threshold {threshold} <= -ln(260): every byte would start a patch")
