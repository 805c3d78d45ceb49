"""The ConceptCodec protocol: how units of bytes become concepts and back.

Every concept space the core can be trained on (the jointly trained byte codec, a frozen
sentence encoder, SONAR) implements it, so the LCM on top never knows which one it is fed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class ConceptCodec(Protocol):
    dim: int  # d, the size of one concept

    def encode(self, units: Sequence[bytes]) -> torch.Tensor:
        """n units -> concepts (n, d)."""

    def decode(self, concepts: torch.Tensor) -> list[bytes]:
        """Concepts (n, d) -> n units."""
