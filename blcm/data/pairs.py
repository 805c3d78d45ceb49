"""Paired bytes (a WAV file and its transcript): cross-modal retrieval and the optional alignment loss.

A pairs directory holds the files and ``transcripts.json``, ``[{"file": "x.wav", "text": "..."}]``
(../shared/data/bytes/speech-en). A file's concept is the mean of its units' concepts; retrieval
asks whether the nearest transcript concept (cosine) of a file's concept is its own transcript's,
and back. The pairs are split by a stable hash of the file name, so the alignment loss trains on
``train`` pairs and retrieval is measured on ``valid`` ones it never aligned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from blcm import DataError
from blcm.data.corpus import in_valid_split

PAIR_SPLITS = ("train", "valid", "all")


@dataclass(frozen=True)
class Pair:
    name: str  # the file's name within the directory
    data: bytes  # the file's bytes (e.g. a WAV)
    text: bytes  # its transcript, UTF-8


def read_pairs(directory: str | Path, split: str = "all", valid_percent: int = 20) -> list[Pair]:
    """The pairs of ``directory`` (see the module docstring) in ``split``, in transcripts.json order."""
    if split not in PAIR_SPLITS:
        raise DataError(f"split must be one of {PAIR_SPLITS}, got {split!r}")
    directory = Path(directory)
    index = directory / "transcripts.json"
    try:
        records = json.loads(index.read_text())
    except FileNotFoundError:
        raise DataError(f"{directory} has no transcripts.json (a list of {{\"file\", \"text\"}} objects)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{index}: unreadable ({e})") from None
    if not isinstance(records, list) or not all(
            isinstance(r, dict) and isinstance(r.get("file"), str) and isinstance(r.get("text"), str) for r in records):
        raise DataError(f"{index} must be a list of {{\"file\": str, \"text\": str}} objects")
    pairs = []
    for r in records:
        if split != "all" and in_valid_split(r["file"], valid_percent) != (split == "valid"):
            continue
        path = directory / r["file"]
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"{index} names {r['file']}, which cannot be read ({e.strerror})") from None
        if not data or not r["text"].strip():
            raise DataError(f"{r['file']}: an empty file or transcript cannot be paired")
        pairs.append(Pair(r["file"], data, r["text"].encode()))
    return pairs


def group_means(vectors: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Consecutive groups of ``sizes`` rows of vectors (U, d) -> the mean of each group (G, d); an empty group
    is zeros. A file's or paragraph's concept is the mean of its units' concepts."""
    group = torch.repeat_interleave(torch.tensor(sizes, device=vectors.device))  # (U,) group of each row
    sums = vectors.new_zeros(len(sizes), vectors.shape[-1]).index_add_(0, group, vectors)
    return sums / torch.bincount(group, minlength=len(sizes)).clamp(min=1)[:, None]
