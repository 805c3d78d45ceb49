"""Units -> concepts for the sections: in batches, as their document's modality, or pooled per paragraph."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from blcm.data.pairs import group_means
from bridges.modality import sniff


def encode_units(model, units: list[bytes], batch_size: int = 256, progress=None, desc: str = "",
                 modalities: str | Sequence[str] | None = None) -> torch.Tensor:
    """Concepts (U, d) of units. ``modalities``: one for all units, or one per unit (its document's), so the
    encoder need not sniff each unit; None: each unit sniffed."""
    per_unit = modalities is not None and not isinstance(modalities, str)
    starts = range(0, len(units), batch_size)
    return torch.cat([model.codec.encode(units[s : s + batch_size],
                                         modalities[s : s + batch_size] if per_unit else modalities)
                      for s in (progress(starts, desc=desc) if progress else starts)])


def paragraph_concepts(model, paragraphs: list[bytes], progress, max_units: int | None = None) -> torch.Tensor:
    """(n, d): the mean of each paragraph's unit concepts (of its first ``max_units``; None: all), each unit
    encoded as its paragraph's modality (sniffed once per paragraph)."""
    units = [model.units(p)[:max_units] for p in paragraphs]
    modalities = [sniff(p) for p, us in zip(paragraphs, units, strict=True) for _ in us]
    concepts = encode_units(model, [u for us in units for u in us], progress=progress, desc="unit batches",
                            modalities=modalities)
    return group_means(concepts, [len(us) for us in units])
