"""Reconstruction: encode -> (+ Gaussian noise σ) -> greedy decode; exact match, byte accuracy and chrF by unit
length and σ."""

from __future__ import annotations

import torch

from blcm.eval.common import Timer, by_source
from blcm.eval.inputs import EvalDocument
from blcm.eval.settings import EvalSettings
from blcm.eval.text import chrf, decoded_byte_accuracy

LENGTH_BUCKETS = ((1, 64), (65, 128), (129, 256), (257, None))


def bucket_name(length: int) -> str:
    for low, high in LENGTH_BUCKETS:
        if high is None or length <= high:
            return f"{low}-{high}" if high else f">{low - 1}"
    raise AssertionError("unreachable")


def reconstruction(model, docs: list[EvalDocument], concepts: torch.Tensor, settings: EvalSettings, speed: dict,
                   progress) -> dict:
    """concepts (U, d): the units of ``docs`` in order."""
    units = [(d.source, u) for d in docs for u in d.units]
    generator = torch.Generator(model.device).manual_seed(settings.seed)
    rows = []
    for sigma in progress(settings.noise, desc="reconstruction (noise levels)"):
        noisy = concepts + sigma * torch.randn(concepts.shape, generator=generator, device=concepts.device)
        with Timer() as t:
            decoded = model.codec.decode(noisy, settings.temperature, None, generator)
        if sigma == 0:
            speed["decode_units_per_s"] = len(units) / t.seconds
        rows += [{"source": s, "sigma": sigma, "bucket": bucket_name(len(u)), "true": u, "decoded": d}
                 for (s, u), d in zip(units, decoded, strict=True)]

    def aggregate(group: list[dict]) -> dict:
        out = {}
        for sigma in settings.noise:
            at = [r for r in group if r["sigma"] == sigma]
            cells = {"all": at, **{b: [r for r in at if r["bucket"] == b] for b in sorted({r["bucket"] for r in at})}}
            out[f"sigma={sigma:g}"] = {name: reconstruction_scores(rs) for name, rs in cells.items() if rs}
        return out

    return by_source(rows, aggregate)


def reconstruction_scores(rows: list[dict]) -> dict:
    return {"units": len(rows),
            "exact": sum(r["decoded"] == r["true"] for r in rows) / len(rows),
            "byte_accuracy": sum(decoded_byte_accuracy(r["decoded"], r["true"]) for r in rows) / len(rows),
            "chrf": chrf([r["decoded"] for r in rows], [r["true"] for r in rows])}
