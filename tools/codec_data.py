"""The units the shipped chunk codec (the spelling) trains and is measured on: every shared text, and the bytes
no text has.

- **text**: every shared text document (en, multilingual, every locale of parallel, a hard-wrapped copy of some)
  cut into sentence units of at most 128 bytes, as ``blcm prepare`` cuts them.
- **random**: uniform random bytes, 1 to 128 of them: every byte value at every position.
- **scripts**: valid UTF-8 drawn from the Unicode scripts (code points grouped by the first word of their
  name: LATIN, BENGALI, TIBETAN, CJK, ...): words of a script's letters, marks, digits and punctuation between
  ASCII spaces, some words ASCII. ``HELD_OUT_SCRIPTS`` are never drawn in training; they measure how the codec
  reads a script it has never seen (``check_held_out_scripts`` proves no training text holds them either).
- **binary**: spans of the WAV and PNG files of shared/data/bytes, files split as the shipped entropy model's
  (``in_valid_split(name, 10)``).

``Mixture`` draws a batch of units from these sources in fixed proportions with a torch.Generator, whose state a
checkpoint keeps, so a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import random
import textwrap
import unicodedata
from collections import defaultdict
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import torch

from blcm.data.corpus import in_valid_split
from blcm.data.documents import iter_records, read_jsonl
from bridges.segment import SentenceSegmenter

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UNIT_BYTES = 128
WRAPPED_PERCENT = 10  # en and multilingual documents that also appear hard-wrapped
BINARY_HELD_OUT_PERCENT = 10  # the shipped entropy model's split of the WAV and PNG files
BINARY_DIRS = {"wav": "speech-en", "png": "images"}
SCRIPT_MIN_CODE_POINTS = 20  # smaller name groups (single symbols) pool into one "OTHER" script
# Scripts the codec never trains on, some in the BMP (3-byte UTF-8), some above it (4 bytes); none of them occurs
# in the shared text (check_held_out_scripts).
HELD_OUT_SCRIPTS = ("ADLAM", "BAMUM", "BUGINESE", "CHEROKEE", "CUNEIFORM", "DESERET", "GOTHIC", "OGHAM", "OL",
                    "OSAGE", "SAURASHTRA", "SHAVIAN", "TIFINAGH", "VAI")
SOURCES = ("text", "random", "scripts", "binary")
ASCII_WORD_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()-"


def wrap(text: str, width: int = 72) -> str:
    """Hard-wrapped paragraphs (README files, e-mail, plain-text books): sentences with newlines inside."""
    return "\n\n".join(textwrap.fill(p, width) for p in text.split("\n\n"))


def corpus_records(split: str) -> Iterator[dict]:
    """Every shared text document of one split as {id, source, text}: parallel text one per language, and a
    hard-wrapped copy of WRAPPED_PERCENT of en and multilingual (the corpora wrap almost no sentence: 0.08%
    of units hold a newline inside)."""
    for name in ("en", "multilingual"):
        for doc in iter_records([str(SHARED / name / f"{split}.jsonl.gz")]):
            yield {"id": f"{name}/{doc.key}", "source": doc.source, "text": doc.data.decode()}
            if in_valid_split(doc.key, WRAPPED_PERCENT):
                yield {"id": f"wrapped/{name}/{doc.key}", "source": f"wrapped/{name}", "text": wrap(doc.data.decode())}
    for _, record in read_jsonl(SHARED / "parallel" / f"{split}.jsonl.gz"):
        for locale, text in record.items():
            if locale not in ("id", "source"):
                yield {"id": f"parallel/{record['id']}/{locale}", "source": f"parallel/{locale}", "text": text}


def text_units(split: str) -> dict[str, list[bytes]]:
    """Sentence units of every shared text of ``split``, by set: en, multilingual, wrapped/en, parallel/<locale>, ..."""
    segment = SentenceSegmenter(UNIT_BYTES).split
    sets: dict[str, list[bytes]] = defaultdict(list)
    for record in corpus_records(split):
        source = record["source"]
        name = source if source.startswith(("parallel/", "wrapped/")) else record["id"].split("/")[0]
        sets[name].extend(segment(record["text"].encode()))
    return dict(sorted(sets.items()))


@cache
def unicode_scripts() -> dict[str, tuple[str, ...]]:
    """Every assigned, visible code point above ASCII (letters, marks, numbers, punctuation, symbols) grouped by
    the first word of its name; groups under SCRIPT_MIN_CODE_POINTS pool into "OTHER"."""
    groups: dict[str, list[str]] = defaultdict(list)
    for code in range(0x80, 0x110000):
        char = chr(code)
        if unicodedata.category(char)[0] in "LMNPS" and (name := unicodedata.name(char, "")):
            groups[name.split()[0]].append(char)
    scripts: dict[str, list[str]] = defaultdict(list)
    for name, chars in groups.items():
        scripts[name if len(chars) >= SCRIPT_MIN_CODE_POINTS else "OTHER"].extend(chars)
    return {name: tuple(chars) for name, chars in sorted(scripts.items())}


def training_scripts() -> list[str]:
    return [s for s in unicode_scripts() if s not in HELD_OUT_SCRIPTS]


def check_held_out_scripts(texts: dict[str, list[bytes]]) -> None:
    """Raise if a training text holds a character of a held-out script (they must be unseen)."""
    held = {c for s in HELD_OUT_SCRIPTS for c in unicode_scripts()[s]}
    for name, units in texts.items():
        if found := {c for u in units for c in u.decode(errors="ignore") if c in held}:
            raise ValueError(f"{name} holds held-out script characters {sorted(found)[:5]}")


def script_unit(rng: random.Random, script: str) -> bytes:
    """A unit of 1 to UNIT_BYTES bytes of valid UTF-8: words of ``script``'s characters between ASCII spaces, one
    word in five of ASCII letters, digits and punctuation, cut at a character boundary."""
    chars, budget = unicode_scripts()[script], rng.randint(1, UNIT_BYTES)
    text, size = [], 0
    while True:
        alphabet = ASCII_WORD_CHARS if rng.random() < 0.2 else chars
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10))) + rng.choice("     ,.")
        for char in word:
            if size + len(char.encode()) > budget:
                return "".join(text).encode() or rng.choice(ASCII_WORD_CHARS).encode()  # a 1-byte unit
            text.append(char)
            size += len(char.encode())


def binary_files(split: str) -> dict[str, list[bytes]]:
    """The WAV and PNG files of one split (``train``: not held out), their bytes by kind."""
    held_out = split != "train"
    return {kind: [p.read_bytes() for p in sorted((SHARED / "bytes" / folder).glob(f"*.{kind}"))
                   if in_valid_split(p.name, BINARY_HELD_OUT_PERCENT) == held_out]
            for kind, folder in BINARY_DIRS.items()}


def binary_spans(files: list[bytes]) -> list[bytes]:
    """Files cut into consecutive UNIT_BYTES spans (the last of each file shorter)."""
    return [data[i : i + UNIT_BYTES] for data in files for i in range(0, len(data), UNIT_BYTES)]


class Mixture:
    """Batches of units drawn from the sources in fixed proportions (``weights``: source -> share)."""

    def __init__(self, texts: list[bytes], binaries: list[bytes], weights: dict[str, float], seed: int = 0):
        if unknown := set(weights) - set(SOURCES):
            raise ValueError(f"unknown sources {sorted(unknown)}: use {', '.join(SOURCES)}")
        if any(w < 0 for w in weights.values()) or not sum(weights.values()) > 0:
            raise ValueError(f"source weights must be >= 0 and not all 0, got {weights}")
        if weights.get("text", 0) > 0 and not texts or weights.get("binary", 0) > 0 and not binaries:
            raise ValueError("a source with a weight has no data")
        self.texts, self.binaries, self.scripts = texts, binaries, training_scripts()
        self.sources = [s for s in SOURCES if weights.get(s, 0) > 0]
        self.shares = torch.tensor([float(weights[s]) for s in self.sources])
        self.generator = torch.Generator().manual_seed(seed)

    def batch(self, size: int) -> list[bytes]:
        """``size`` units; the generator's state decides every draw."""
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        rng = random.Random(seed)  # Python-side draws, seeded from the generator so a checkpoint replays them
        picks = torch.multinomial(self.shares, size, replacement=True, generator=self.generator).tolist()
        return [self.draw(self.sources[k], rng) for k in picks]

    def draw(self, source: str, rng: random.Random) -> bytes:
        if source == "text":
            return rng.choice(self.texts)
        if source == "random":
            return rng.randbytes(rng.randint(1, UNIT_BYTES))
        if source == "scripts":
            return script_unit(rng, rng.choice(self.scripts))
        data = rng.choice(self.binaries)  # a span: whole (128 bytes) three times in four, else a random length
        length = UNIT_BYTES if rng.random() < 0.75 else rng.randint(1, UNIT_BYTES)
        start = rng.randrange(max(1, len(data) - length + 1))
        return data[start : start + length]
