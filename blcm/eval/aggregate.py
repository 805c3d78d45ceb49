"""How the sections turn per-item rows into the report's numbers: overall and per group, NaN-aware."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable


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
