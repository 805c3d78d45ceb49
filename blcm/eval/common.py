"""What the sections share: units -> concepts in batches, per-item rows -> the report's numbers (overall and per
group, NaN-aware), and the seconds a section takes (speed and the report's timings) with its progress bar."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import torch


def encode_units(model, units: list[bytes], batch_size: int = 256, progress=None, desc: str = "",
                 modalities: str | Sequence[str] | None = None) -> torch.Tensor:
    """Concepts (U, d) of units. ``modalities``: one for all units, or one per unit (its document's), so the
    encoder need not sniff each unit; None: each unit sniffed."""
    per_unit = modalities is not None and not isinstance(modalities, str)
    starts = range(0, len(units), batch_size)
    return torch.cat([model.codec.encode(units[s : s + batch_size],
                                         modalities[s : s + batch_size] if per_unit else modalities)
                      for s in (progress(starts, desc=desc) if progress else starts)])


def nanmean(values: Iterable[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def by_source(rows: list[dict], aggregate: Callable[[list[dict]], dict]) -> dict[str, dict]:
    """{"overall": aggregate(rows), "<source>": aggregate(rows of that source), ...}."""
    groups = defaultdict(list)
    for row in rows:
        groups[row["source"]].append(row)
    return {"overall": aggregate(rows), **{s: aggregate(g) for s, g in sorted(groups.items())}}


def bits_per_byte(rows: list[dict]) -> dict:
    """Rows of {"nats", "bytes", "units"} -> their total bits per byte."""
    num_bytes = sum(r["bytes"] for r in rows)
    return {"units": sum(r["units"] for r in rows), "bytes": num_bytes,
            "bpb": sum(r["nats"] for r in rows) / num_bytes / math.log(2)}


class Timer:
    """Seconds spent inside ``with timer:``, summed over every use."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._start


def progress_bar(items, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False)


def no_progress_bar(items, desc: str):
    return items
