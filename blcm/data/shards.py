"""A prepared directory, what `blcm prepare` writes and PreparedUnits reads: its manifest and its shards.

Layout::

    DIR/manifest.json                 format version, settings (segmenter config, inputs, text_field,
                                      valid_percent, shard_docs), per split: shards, docs, units, bytes;
                                      skipped (bad files/lines) and empty-document counts
    DIR/{train,valid}/shard-NNNNN/
        bytes.npy    uint8 (n_bytes,)       every unit's bytes, concatenated (= the documents, in order)
        units.npy    int64 (n_units, 2)     start offset into bytes.npy, length
        docs.npy     int64 (n_docs, 2)      first unit, unit count
        sources.json list[str] (n_docs,)    each document's source (JSONL "source", else the file name)
        modalities.json list[str] (n_docs,) each document's modality from its content (bridges.modality)

Each file appears whole or not at all: the manifest is written with atomic_write, each shard into a
temporary directory renamed into place (atomic_directory).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from blcm import DataError
from primitives.atomic import atomic_directory, atomic_write

MANIFEST_FORMAT = "byte-lcm-prepared-units"
VERSION = 1
SPLITS = ("train", "valid")
MANIFEST = "manifest.json"


def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def read_manifest(out: str | os.PathLike) -> dict | None:
    """The manifest of a prepared directory, None when there is none; DataError when it is unreadable."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path}: not a byte-lcm prepared-units manifest")
    if manifest.get("version") != VERSION:
        raise DataError(f"{path}: format version {manifest.get('version')}, this byte-lcm reads {VERSION}; "
                        "prepare it again (--force)")
    return manifest


def read_prepared(directory: str | Path) -> dict:
    """The manifest of a complete prepared directory, else DataError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"no such directory: {directory}")
    manifest = read_manifest(directory)
    if manifest is None:
        raise DataError(f"{directory} is not a prepared dataset (no manifest.json): run `blcm prepare INPUT... "
                        f"--out {directory}`")
    if not manifest.get("complete"):
        raise DataError(f"{directory}: preparation did not finish; run the same `blcm prepare` again to resume")
    return manifest


def write_manifest(out: Path, fields: dict) -> dict:
    """Write the manifest of ``out``, this format and version and ``fields``, and return it."""
    manifest = {"format": MANIFEST_FORMAT, "version": VERSION, **fields}
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest


def write_shard(split_dir: Path, k: int, docs: list[bytes], unit_lengths: list[np.ndarray],
                sources: list[str], modalities: list[str]) -> None:
    """Shard ``k`` of a split: ``docs`` (their bytes), each cut into units of ``unit_lengths``."""
    lengths = np.concatenate(unit_lengths).astype(np.int64)  # (n_units,)
    counts = np.array([len(u) for u in unit_lengths], dtype=np.int64)  # (n_docs,)
    units = np.stack([np.cumsum(lengths) - lengths, lengths], axis=1)  # (n_units, 2)
    doc_index = np.stack([np.cumsum(counts) - counts, counts], axis=1)  # (n_docs, 2)
    with atomic_directory(split_dir / shard_name(k)) as tmp:
        np.save(tmp / "bytes.npy", np.frombuffer(b"".join(docs), dtype=np.uint8))
        np.save(tmp / "units.npy", units)
        np.save(tmp / "docs.npy", doc_index)
        (tmp / "sources.json").write_text(json.dumps(sources, ensure_ascii=False))
        (tmp / "modalities.json").write_text(json.dumps(modalities))


def shard_stats(shard: Path) -> dict:
    """A shard's entry in the manifest: its name, docs, units, bytes and modalities."""
    docs = np.load(shard / "docs.npy", mmap_mode="r")
    units = np.load(shard / "units.npy", mmap_mode="r")
    data = np.load(shard / "bytes.npy", mmap_mode="r")
    modalities = shard / "modalities.json"  # absent in shards written before modalities were recorded
    counts = Counter(json.loads(modalities.read_text())) if modalities.is_file() else Counter()
    return {"name": shard.name, "docs": int(docs.shape[0]), "units": int(units.shape[0]), "bytes": int(data.size),
            "modalities": dict(sorted(counts.items()))}
