"""UnitBatch: a batch of document windows of units, as the ByteLCM trains on them (blcm.data.units.collate_units)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from blt.ids import EOD


@dataclass
class UnitBatch:
    """B windows of consecutive units of a document, every unit once in ``units``::

        units           (U, L) int64  byte ids, right-padded with PAD; L = the longest unit in the batch
        unit_lengths    (U,)   int64
        doc_units       (B, N) int64  row b: the indices into ``units`` of window b's units, -1 padding
        doc_mask        (B, N) bool
        unit_modalities (U,)   int64  indices into bridges.modality.MODALITIES

    ``to`` moves every field; Lightning calls it to put a batch on the module's device.
    """

    units: torch.Tensor
    unit_lengths: torch.Tensor
    doc_units: torch.Tensor
    doc_mask: torch.Tensor
    unit_modalities: torch.Tensor

    @property
    def has_bytes(self) -> torch.Tensor:
        """(U,) bool: the units that hold bytes; False for the end-of-document units, which exist for the core
        only (no bytes to encode or reconstruct)."""
        return self.units[:, 0] != EOD

    def sequences(self, concepts: torch.Tensor) -> torch.Tensor:
        """Unit concepts (U, d) -> each window's concept sequence (B, N, d), zero where ``doc_mask`` is False."""
        return concepts[self.doc_units.clamp(min=0)].masked_fill(~self.doc_mask[..., None], 0.0)

    def to(self, device: torch.device | str) -> UnitBatch:
        return UnitBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def padding_waste(self) -> float:
        """The share of PAD positions in ``units``."""
        total = self.units.numel()
        return 1.0 - float(self.unit_lengths.sum()) / total if total else 0.0
