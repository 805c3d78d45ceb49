"""`blcm prepare`: segment every document once into units and store them as numpy shards.

The directory's layout is in blcm.data.shards.

Why plain ``.npy`` files and not litdata (or webdataset, or Arrow): no extra dependency; what length
bucketing needs is random access by unit and by document index, which a memory-mapped array gives
for free (``np.load(mmap_mode="r")``) while streaming formats give sequential chunks; the corpora this
project trains on are tens of MB, which the page cache holds whole; and sharding across DDP ranks and
DataLoader workers is done by the batch sampler on window indices (blcm.data.sampler.BucketBatchSampler), not
by handing files to ranks, so no streaming-shard machinery is needed.

Writes are atomic (each shard is written into a temporary directory, then renamed) and resumable:
documents are read in a deterministic order, shard ``k`` of a split holds that split's documents
``[k * shard_docs, (k + 1) * shard_docs)``, and a rerun after a crash skips the shards already there.
A finished directory with the same settings is left as it is; different settings are refused unless
``force`` (which removes only what ``prepare`` writes: manifest.json, train/, valid/).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from blcm import DataError
from blcm.data.corpus import in_valid_split
from blcm.data.documents import SkipReport, iter_records
from blcm.data.fingerprint import fingerprint
from blcm.data.shards import (
    MANIFEST,
    SPLITS,
    read_manifest,
    shard_name,
    shard_stats,
    write_manifest,
    write_shard,
)
from blt.pretrained import PretrainedError, load_shipped_entropy_model
from bridges.modality import sniff
from bridges.segment import (
    EntropySegmenter,
    FixedSegmenter,
    ModalitySegmenter,
    Segmenter,
    SentenceSegmenter,
    build_segmenter,
)

log = logging.getLogger("blcm")

SEGMENTERS = ("sentence", "fixed", "modality")
OTHER_SEGMENTERS = ("fixed", "entropy")
ENTROPY_MIN_UNIT_BYTES = 16  # an entropy unit never ends within its first 16 bytes (one decoder segment)
_EMPTY_WARNINGS = 10  # empty documents named one by one before only counting


def make_segmenter(segmenter: str | dict | Segmenter = "sentence", max_unit_bytes: int = 256,
                   other: str = "fixed") -> Segmenter:
    """"sentence" | "fixed" | "modality" (sentences for text; other bytes in fixed spans, or with ``other="entropy"``
    cut where the shipped entropy model is surprised; units of at most ``max_unit_bytes``), a config dict, or a
    segmenter object."""
    if other not in OTHER_SEGMENTERS:
        raise DataError(f"unknown segmenter for non-text bytes {other!r}: use one of {', '.join(OTHER_SEGMENTERS)}")
    if other != "fixed" and segmenter != "modality":
        raise DataError(f"other={other!r} cuts the non-text documents of the modality segmenter: use it with "
                        f"segmenter 'modality', not {segmenter!r}")
    if not isinstance(segmenter, (str, dict)):
        return segmenter
    if isinstance(segmenter, str) and segmenter not in SEGMENTERS:
        raise DataError(f"unknown segmenter {segmenter!r}: use one of {', '.join(SEGMENTERS)}")
    try:
        if isinstance(segmenter, dict):
            return build_segmenter(segmenter)
        if segmenter == "sentence":
            return SentenceSegmenter(max_bytes=max_unit_bytes)
        if segmenter == "modality":
            text = SentenceSegmenter(max_bytes=max_unit_bytes)
            return ModalitySegmenter(text, other_segmenter(other, max_unit_bytes))
        return FixedSegmenter(size=max_unit_bytes)
    except (ValueError, PretrainedError) as e:
        raise DataError(str(e)) from None


def other_segmenter(other: str, max_unit_bytes: int) -> Segmenter:
    """Non-text bytes in spans of ``max_unit_bytes``, or entropy units of mean ``max_unit_bytes / 2``."""
    if other == "fixed":
        return FixedSegmenter(size=max_unit_bytes)
    return EntropySegmenter(load_shipped_entropy_model()[0], min_bytes=min(ENTROPY_MIN_UNIT_BYTES, max_unit_bytes),
                            max_bytes=max_unit_bytes, target_bytes=max(max_unit_bytes / 2, 1))


def _settings(inputs: list[Path], valid_inputs: list[Path] | None, segmenter: Segmenter, text_field: str,
              valid_percent: int, shard_docs: int) -> dict:
    return {
        "segmenter": segmenter.to_config(),
        "inputs": [str(p) for p in inputs],
        "valid_inputs": None if valid_inputs is None else [str(p) for p in valid_inputs],
        "fingerprint": fingerprint(inputs + (valid_inputs or [])),
        "text_field": text_field,
        "valid_percent": None if valid_inputs is not None else valid_percent,
        "shard_docs": shard_docs,
    }


def _differences(old: dict, new: dict) -> list[str]:
    names = {"fingerprint": "input files (paths, sizes or modification times)"}
    return [names.get(k, k) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _clear(out: Path) -> None:
    """Remove what prepare writes, and nothing else."""
    for split in SPLITS:
        if (out / split).exists():
            shutil.rmtree(out / split)
    (out / MANIFEST).unlink(missing_ok=True)


def prepare(inputs: list[str | os.PathLike], out: str | os.PathLike, *, segmenter: str | dict | Segmenter = "sentence",
            max_unit_bytes: int = 256, valid_percent: int = 3, shard_docs: int = 2000, text_field: str = "text",
            valid_inputs: list[str | os.PathLike] | None = None, force: bool = False,
            progress: bool = True, other: str = "fixed") -> dict:
    """Segment the documents of ``inputs`` into units and write them as shards under ``out``.

    Args:
        inputs: JSONL(.gz) files (``text_field`` per line), other files (one document each), directories.
        out: the prepared directory (created).
        segmenter: "sentence" | "fixed" | "modality" (capped at ``max_unit_bytes``), a segmenter config, or a
            segmenter.
        valid_percent: the share of documents held out, by a stable hash of each document's source and
            id (JSONL "id", else its ordinal in its file, or its path for a plain file).
        shard_docs: documents per shard.
        valid_inputs: when given, the valid split is these documents and every document of ``inputs``
            is in train (``valid_percent`` is not used).
        force: prepare again even when ``out`` holds a dataset prepared with other settings.
        other: with segmenter "modality", how non-text documents are cut: "fixed" spans or "entropy" units
            (bridges.segment.EntropySegmenter with the shipped entropy model).

    Returns the manifest. Raises DataError on bad settings, a missing input, no documents, or an
    ``out`` prepared with other settings (without ``force``).
    """
    if max_unit_bytes < 1 or shard_docs < 1:
        raise DataError(f"max_unit_bytes and shard_docs must be >= 1, got {max_unit_bytes} and {shard_docs}")
    if not 0 <= valid_percent <= 100:
        raise DataError(f"valid_percent must lie in [0, 100], got {valid_percent}")
    if not inputs:
        raise DataError("no inputs given")
    in_paths = [Path(p).resolve() for p in inputs]
    valid_paths = None if valid_inputs is None else [Path(p).resolve() for p in valid_inputs]
    for p in in_paths + (valid_paths or []):
        if not p.exists():
            raise DataError(f"no such file or directory: {p}")
    seg = make_segmenter(segmenter, max_unit_bytes, other)
    settings = _settings(in_paths, valid_paths, seg, text_field, valid_percent, shard_docs)

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a directory")
    manifest = None if force else read_manifest(out)
    if force:
        _clear(out)
    elif manifest is not None:
        if manifest.get("settings") != settings:
            diff = ", ".join(_differences(manifest.get("settings") or {}, settings))
            raise DataError(f"{out} was prepared with other settings ({diff}); use --force to prepare it again, "
                            "or another --out")
        if manifest.get("complete"):
            log.info("%s is already prepared with these settings", out)
            return manifest
        log.info("%s: resuming an interrupted prepare", out)
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty and holds no prepared dataset (no {MANIFEST}); "
                        "use another --out, or --force to write into it")

    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, {"complete": False, "settings": settings})
    for split in SPLITS:
        (out / split).mkdir(exist_ok=True)
        # A run killed mid-shard leaves atomic_directory's temporary directory (one that fails removes its own).
        for leftover in (out / split).glob(".shard-*.tmp"):
            shutil.rmtree(leftover)
    return _run(out, settings, seg, in_paths, valid_paths, text_field, valid_percent, shard_docs, progress)


def _run(out: Path, settings: dict, seg: Segmenter, in_paths: list[Path], valid_paths: list[Path] | None,
         text_field: str, valid_percent: int, shard_docs: int, progress: bool) -> dict:
    from tqdm import tqdm

    done = {split: {p.name for p in (out / split).glob("shard-*") if p.is_dir()} for split in SPLITS}
    skipped, empty = SkipReport(), 0
    count = dict.fromkeys(SPLITS, 0)  # documents seen per split
    buffers: dict[str, tuple[list, list, list, list]] = {split: ([], [], [], []) for split in SPLITS}

    def flush(split: str) -> None:
        k = (count[split] - 1) // shard_docs
        if shard_name(k) not in done[split]:
            write_shard(out / split, k, *buffers[split])
        buffers[split] = ([], [], [], [])

    streams = [(p, None) for p in in_paths] if valid_paths is None else (
        [(p, "train") for p in in_paths] + [(p, "valid") for p in valid_paths])
    n_bytes = 0
    with tqdm(unit=" docs", desc=f"prepare {out.name}", disable=not progress or None, mininterval=0.5) as bar:
        for path, fixed_split in streams:
            for doc in iter_records([path], text_field, skipped):
                if not doc.data:
                    empty += 1
                    if empty <= _EMPTY_WARNINGS:
                        log.warning("skipped an empty document: %s (%s)", doc.key, path)
                    continue
                split = fixed_split or ("valid" if in_valid_split(doc.key, valid_percent) else "train")
                count[split] += 1
                if shard_name((count[split] - 1) // shard_docs) not in done[split]:
                    units = seg.split(doc.data)
                    if b"".join(units) != doc.data or not all(units):
                        raise RuntimeError(f"{type(seg).__name__} is not lossless on {doc.key}: "
                                           "its units do not join back to the document, or one is empty")
                    docs, lengths, sources, modalities = buffers[split]
                    docs.append(doc.data)
                    lengths.append(np.fromiter(map(len, units), dtype=np.int64, count=len(units)))
                    sources.append(doc.source)
                    modalities.append(sniff(doc.data))
                if count[split] % shard_docs == 0:
                    flush(split)
                n_bytes += len(doc.data)
                bar.update(1)
                if bar.n % 256 == 0:
                    bar.set_postfix_str(f"{n_bytes / 1e6:.1f} MB", refresh=False)
        bar.set_postfix_str(f"{n_bytes / 1e6:.1f} MB")
    for split in SPLITS:
        if count[split] % shard_docs:
            flush(split)
    if empty > _EMPTY_WARNINGS:
        log.warning("skipped %d empty documents in all", empty)
    if not sum(count.values()):
        what = ", ".join(map(str, in_paths + (valid_paths or [])))
        extra = f" ({skipped.named()})" if skipped.items else (f" ({empty} empty)" if empty else "")
        raise DataError(f"no documents found in {what}{extra}")

    splits = {}
    for split in SPLITS:
        n_shards = -(-count[split] // shard_docs)
        shards = [shard_stats(out / split / shard_name(k)) for k in range(n_shards)]
        modalities = sum((Counter(s["modalities"]) for s in shards), Counter())
        splits[split] = {"shards": shards, **{key: sum(s[key] for s in shards) for key in ("docs", "units", "bytes")},
                         "modalities": dict(sorted(modalities.items()))}
    return write_manifest(out, {"complete": True, "settings": settings, "splits": splits, "skipped": len(skipped.items),
                                "skipped_items": skipped.items[:100], "empty": empty})


def _size(n: int) -> str:
    return f"{n} B" if n < 1000 else f"{n / 1e3:.1f} kB" if n < 1e6 else f"{n / 1e6:.2f} MB"


def summary(out: str | os.PathLike, manifest: dict) -> str:
    """One line: docs/units/bytes per split, and what was skipped."""
    parts = []
    for split in SPLITS:
        s = manifest["splits"][split]
        kinds = s.get("modalities") or {}
        mix = f" ({', '.join(f'{k} {n:,}' for k, n in kinds.items())})" if set(kinds) - {"text"} else ""
        parts.append(f"{split} {s['docs']:,} docs{mix} / {s['units']:,} units / {_size(s['bytes'])}")
    items, skipped = manifest.get("skipped_items", []), manifest.get("skipped", 0)
    tail = f"skipped {skipped} bad file(s)/line(s)"
    if items:
        more = f" and {skipped - 5} more" if skipped > 5 else ""
        tail += f": {'; '.join(items[:5])}{more}"
    return f"{out}: {', '.join(parts)}; {tail}; {manifest.get('empty', 0)} empty document(s) skipped"
