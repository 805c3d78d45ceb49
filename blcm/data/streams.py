"""A byte stream for language modelling (the entropy model, bytegpt): ``[BOS doc EOS][BOS doc EOS]...`` as
uint16 ids, cached once per set of inputs, cut into windows by ByteStreamDataModule."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from blcm import DataError
from blcm.data.corpus import fetch_corpus, home
from blcm.data.documents import SkipReport, iter_documents
from blcm.data.fingerprint import fingerprint
from blt.ids import BOS, EOS, OFFSET, PAD
from primitives.atomic import atomic_file

log = logging.getLogger("blcm")


def stream_from_documents(docs: Iterable[bytes]) -> np.ndarray:
    """[BOS doc EOS][BOS doc EOS]... as uint16 ids (empty when there are no documents)."""
    pieces, bos, eos = [], np.array([BOS], dtype=np.uint16), np.array([EOS], dtype=np.uint16)
    for doc in docs:
        pieces += [bos, np.frombuffer(doc, dtype=np.uint8).astype(np.uint16) + OFFSET, eos]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)


def build_stream(paths: list[str], text_field: str = "text") -> tuple[np.ndarray, SkipReport]:
    skipped = SkipReport()
    stream = stream_from_documents(iter_documents(paths, text_field, skipped))
    if not len(stream):
        raise DataError(f"no documents found in {', '.join(map(str, paths))}")
    return stream, skipped


def cached_stream(paths: list[str], text_field: str = "text") -> np.ndarray:
    """build_stream, cached in $BLCM_HOME/streams under a key of the inputs' fingerprint and the text field."""
    key = hashlib.sha1(json.dumps([text_field, fingerprint(paths)]).encode()).hexdigest()[:16]
    cache = home() / "streams" / f"{key}.npy"
    if cache.is_file():
        return np.load(cache, mmap_mode="r")
    stream, skipped = build_stream(paths, text_field)
    if skipped.items:
        log.warning("%s in %s", skipped.summary(), ", ".join(map(str, paths)))
    with atomic_file(cache) as tmp:
        np.save(tmp, stream)
    return np.load(cache, mmap_mode="r")


class StreamWindows(Dataset):
    """Windows of ``seq_len + 1`` ids starting every ``seq_len``: each id after the first is a
    target exactly once. The last window is PAD-filled."""

    def __init__(self, stream: np.ndarray, seq_len: int):
        self.stream, self.seq_len = stream, seq_len

    def __len__(self) -> int:
        return max(-(-(len(self.stream) - 1) // self.seq_len), 0)

    def __getitem__(self, i: int) -> torch.Tensor:
        window = np.full(self.seq_len + 1, PAD, dtype=np.int64)
        piece = self.stream[i * self.seq_len : (i + 1) * self.seq_len + 1]
        window[: len(piece)] = piece
        return torch.from_numpy(window)


class ByteStreamDataModule(L.LightningDataModule):
    """Windows of ``seq_len + 1`` byte ids (input + shifted target) over concatenated documents.

    Args:
        train_files: JSONL(.gz)/text files or directories. None: the default corpus (fetched once).
        val_files: held-out files. None: the default corpus's valid split, or, with explicit
            ``train_files``, no validation.
        seq_len: bytes of context per training window.
        batch_size: windows per batch.
        text_field: the JSONL field holding the document text.
        num_workers: DataLoader worker processes.
    """

    def __init__(self, train_files: list[str] | None = None, val_files: list[str] | None = None,
                 seq_len: int = 256, batch_size: int = 32, text_field: str = "text", num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.train_files, self.val_files = train_files, val_files
        self.seq_len, self.batch_size, self.text_field, self.num_workers = seq_len, batch_size, text_field, num_workers

    def _resolve(self) -> tuple[list[str], list[str] | None]:
        # Checked here, not in __init__: LightningCLI would wrap an __init__ error in a parser traceback.
        if self.seq_len < 1 or self.batch_size < 1:
            raise DataError(f"seq_len and batch_size must be >= 1, got {self.seq_len} and {self.batch_size}")
        for path in (self.train_files or []) + (self.val_files or []):
            if not Path(path).exists():
                raise DataError(f"no such file or directory: {path}")
        if self.train_files is not None:
            return self.train_files, self.val_files
        corpus = fetch_corpus()
        return [str(corpus / "train.jsonl.gz")], self.val_files or [str(corpus / "valid.jsonl.gz")]

    def prepare_data(self) -> None:
        train, val = self._resolve()
        for files in (train, val):
            if files:
                cached_stream(files, self.text_field)

    def setup(self, stage: str) -> None:
        train, val = self._resolve()
        self.train_set = StreamWindows(cached_stream(train, self.text_field), self.seq_len)
        self.val_set = StreamWindows(cached_stream(val, self.text_field), self.seq_len) if val else None

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          drop_last=shuffle, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []
