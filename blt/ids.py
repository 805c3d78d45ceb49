"""Byte ids, BLT's offset convention: four special ids, then byte ``b`` is ``b + 4``.

Any byte string round-trips, whatever its encoding (there is no UTF-8 assumption).
"""

from __future__ import annotations

import numpy as np
import torch

PAD, BOS, EOS, EOD = 0, 1, 2, 3
OFFSET = 4
VOCAB_SIZE = 256 + OFFSET


def encode(data: bytes | bytearray | memoryview) -> torch.Tensor:
    """Bytes -> int64 ids of shape (len(data),)."""
    arr = np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int64)
    return torch.from_numpy(arr + OFFSET)


def decode(ids: torch.Tensor | np.ndarray | list[int]) -> bytes:
    """Ids -> bytes; special ids (PAD, BOS, EOS, EOD) are dropped."""
    arr = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        raise ValueError(f"byte ids must lie in [0, {VOCAB_SIZE}), got [{arr.min()}, {arr.max()}]")
    arr = arr[arr >= OFFSET]
    return (arr - OFFSET).astype(np.uint8).tobytes()


def pad_batch(seqs: list[bytes], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Byte strings -> (ids (B, L) padded with PAD, lengths (B,)); L = longest or ``pad_to``."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    width = int(lengths.max()) if seqs and pad_to is None else (pad_to or 0)
    if seqs and width < int(lengths.max()):
        raise ValueError(f"pad_to={pad_to} is shorter than the longest sequence ({int(lengths.max())})")
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = encode(s)
    return ids, lengths
