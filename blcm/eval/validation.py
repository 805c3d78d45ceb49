"""What a ByteLCMModule's validation logs: sums of the epoch's metrics, and text samples for TensorBoard."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from blcm.batch import UnitBatch
from blcm.eval.text import unit_text
from blcm.model import ByteLCM
from blt.ids import EOD, decode
from concept_core.interface import Sampling
from concept_core.metrics import TeacherForced, contrastive_accuracy, l2

SUMS = ("entropy_nats", "entropy_bytes", "nats", "bytes", "exact", "units", "exact_le128", "units_le128", "core_loss",
        "core_batches", "pairs", "l2", "copy_l2", "ca", "ca_items", "copy_ca", "copy_ca_items")


@dataclass
class ValidationTotals:
    """Sums over a validation epoch. Ranks add their sums up before any ratio is taken, so every rank
    logs the same metrics (a ratio of sums, not a mean of per-rank ratios). CA compares a prediction
    with the targets of its own rank's pool."""

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SUMS, 0.0))
    documents: int = 0

    def add(self, **values) -> None:
        for name, value in values.items():
            self.sums[name] += float(value)

    def add_predictions(self, predictions: TeacherForced, documents: int) -> None:
        pred, target, copy = predictions.pred, predictions.target, predictions.previous
        if len(pred):
            doc = predictions.doc + self.documents  # document ids unique across batches, for CA's neighbour exclusion
            ca = contrastive_accuracy(pred, target, doc_ids=doc)
            copy_ca = contrastive_accuracy(copy, target, doc_ids=doc)
            self.add(pairs=len(pred), l2=l2(pred, target).sum(), copy_l2=l2(copy, target).sum(),
                     ca=ca.nansum(), ca_items=(~ca.isnan()).sum(), copy_ca=copy_ca.nansum(),
                     copy_ca_items=(~copy_ca.isnan()).sum())
        self.documents += documents

    def tensor(self, device) -> torch.Tensor:
        return torch.tensor([self.sums[name] for name in SUMS], dtype=torch.float64, device=device)

    @staticmethod
    def metrics(sums: torch.Tensor) -> dict[str, float]:
        s = dict(zip(SUMS, sums.tolist(), strict=True))
        ratios = {"entropy_bpb": ("entropy_nats", "entropy_bytes", 1 / math.log(2)),
                  "bpb": ("nats", "bytes", 1 / math.log(2)), "exact": ("exact", "units", 1.0),
                  "exact_le128": ("exact_le128", "units_le128", 1.0), "core_loss": ("core_loss", "core_batches", 1.0),
                  "l2": ("l2", "pairs", 1.0), "copy_last_l2": ("copy_l2", "pairs", 1.0),
                  "ca": ("ca", "ca_items", 1.0), "copy_last_ca": ("copy_ca", "copy_ca_items", 1.0)}
        return {name: s[num] / s[den] * scale for name, (num, den, scale) in ratios.items() if s[den] > 0}


def decode_ids(ids: torch.Tensor) -> bytes:
    return b"<EOD>" if ids.numel() and int(ids[0]) == EOD else decode(ids)


def sample_tables(model: ByteLCM, batch: UnitBatch, concepts: torch.Tensor, n: int, sampling: Sampling
                  ) -> dict[str, str]:
    """Markdown tables of ``n`` reconstructions and, once the core is ready, ``n`` continuations (each document
    continued from its first half), by TensorBoard tag."""
    codec, units, lengths = model.codec, batch.units, batch.unit_lengths
    text = batch.has_bytes.nonzero().flatten()[:n]
    rebuilt = codec.decode(concepts[text])
    lines = [f"| {unit_text(decode_ids(units[i, : lengths[i]]), 160, cell=True)} | {unit_text(r, 160, cell=True)} |"
             for i, r in zip(text.tolist(), rebuilt, strict=True)]
    tables = {"val/reconstruction": "| unit | reconstruction |\n|---|---|\n" + "\n".join(lines)}
    sequences, mask, rows = batch.sequences(concepts), batch.doc_mask, []
    generator = torch.Generator(concepts.device).manual_seed(0)
    for b in range(min(n, len(mask)) if model.core_ready else 0):
        k = int(mask[b].sum()) // 2
        if k < 1:
            continue
        context = sequences[b : b + 1, :k]
        predicted = model.core.predict_next(context, None, sampling, generator)
        true_unit = batch.doc_units[b, k]
        shown = [b"".join(codec.decode(context[0][-1:])), codec.decode(predicted)[0],
                 decode_ids(units[true_unit, : lengths[true_unit]])]
        rows.append("| " + " | ".join(unit_text(u, 160, cell=True) for u in shown) + " |")
    if rows:
        tables["val/continuation"] = ("| last context unit (decoded) | generated next | true next |\n"
                                      "|---|---|---|\n" + "\n".join(rows))
    return tables
