"""A byte LM's log-probabilities of units: MI of predicted units (LCM paper) and its next-unit bits per byte."""

from __future__ import annotations

import math

from blcm.eval.common import bits_per_byte, by_source
from blcm.eval.inputs import EvalDocument
from blt.entropy import EntropyModel
from blt.ids import pad_batch


def mutual_information(byte_lm: EntropyModel, contexts: list[bytes], units: list[bytes], batch_size: int = 16,
                       progress=None) -> list[float]:
    """(log p(unit | context) - log p(unit)) / |unit| in nats per byte, NaN for an empty unit."""
    out = [math.nan] * len(units)
    starts = range(0, len(units), batch_size)
    for i in progress(starts, desc="MI (byte LM batches)") if progress else starts:
        block = [j for j in range(i, min(i + batch_size, len(units))) if units[j]]
        if not block:
            continue
        with_context = unit_log_probs(byte_lm, [contexts[j] for j in block], [units[j] for j in block])
        alone = unit_log_probs(byte_lm, [b""] * len(block), [units[j] for j in block])
        for j, a, b in zip(block, with_context, alone, strict=True):
            out[j] = (a - b) / len(units[j])
    return out


def unit_log_probs(byte_lm: EntropyModel, contexts: list[bytes], units: list[bytes]) -> list[float]:
    """log p(unit | context) in nats: the byte LM's log-probabilities of each unit's bytes after its context."""
    ids, lengths = pad_batch([c + u for c, u in zip(contexts, units, strict=True)])
    device = byte_lm.head.weight.device
    logp = byte_lm.log_probs(ids.to(device), lengths.to(device)).cpu()
    return [float(logp[i, len(c) : len(c) + len(u)].sum()) for i, (c, u) in enumerate(zip(contexts, units,
                                                                                       strict=True))]


def byte_lm_bits_per_byte(byte_lm: EntropyModel, docs: list[EvalDocument]) -> dict:
    """The byte LM's bits per byte on the units k >= 1 of each document, given all the bytes before them."""
    rows = []
    for d in docs:
        if len(d.units) < 2:
            continue
        first = len(d.units[0])
        logp = unit_log_probs(byte_lm, [d.units[0]], [b"".join(d.units[1:])])[0]
        rows.append({"source": d.source, "nats": -logp, "bytes": sum(map(len, d.units)) - first,
                     "units": len(d.units) - 1})
    return by_source(rows, bits_per_byte) if rows else {}
