"""Patching (entropy-patching encoders): the encoder's entropy model's bits per byte on the units and the mean
patch size at the model's calibrated threshold, per group (e.g. per modality)."""

from __future__ import annotations

import math

import torch

from blcm.eval.common import by_source
from blcm.eval.inputs import EvalDocument
from blt.ids import pad_batch
from bridges.modality import modality_index, sniff


def patching(model, docs: list[EvalDocument], batch_size: int = 64) -> dict:
    """Per group: the encoder's entropy model's bits per byte on the units (each unit read from BOS) and the
    mean patch size at the calibrated threshold."""
    encoder = model.codec.encoder
    units = [(d.source, modality_index(d.modality or sniff(u)), u) for d in docs for u in d.units]
    rows = []
    for s in range(0, len(units), batch_size):
        block = units[s : s + batch_size]
        ids, lengths = pad_batch([u for _, _, u in block])
        ids, lengths = ids.to(model.device), lengths.to(model.device)
        nats = -encoder.entropy_model.log_probs(ids, lengths).sum(1)  # (b,)
        modalities = torch.tensor([m for _, m, _ in block], device=model.device)
        counts = encoder.patches(ids, lengths, modalities).counts  # (b,)
        rows += [{"source": src, "nats": float(n), "bytes": len(u), "patches": int(c)}
                 for (src, _, u), n, c in zip(block, nats.tolist(), counts.tolist(), strict=True)]

    def aggregate(group: list[dict]) -> dict:
        num_bytes = sum(r["bytes"] for r in group)
        return {"units": len(group), "bytes": num_bytes, "bpb": sum(r["nats"] for r in group) / num_bytes / math.log(2),
                "patch_bytes": num_bytes / sum(r["patches"] for r in group)}

    return by_source(rows, aggregate)
