"""What the ship tools' training loops write at each evaluation: a row of runs/<name>/curve.jsonl, echoed to the
log, and a checkpoint written atomically (a crash mid-write leaves the last one whole)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

import torch


def record(curve: IO[str], row: dict[str, float], checkpoint: Path, state: dict) -> None:
    """Append ``row`` to the open curve file and print it; save ``state`` to ``checkpoint`` through a temporary file."""
    curve.write(json.dumps(row) + "\n")
    curve.flush()
    print(" | ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    torch.save(state, checkpoint.with_suffix(".tmp"))
    checkpoint.with_suffix(".tmp").replace(checkpoint)
