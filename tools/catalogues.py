"""Software message catalogues: short English sentences of program interfaces and their translations, from the
compiled gettext catalogues (.mo) inside pinned PyPI wheels.

The handbook's parallel text (../shared/data/parallel) gives the translation term about 7,900 English units; these
wheels give about 6,000 more English messages in up to 109 languages. Four wheels train; Sphinx's catalogue is held
out whole, as parallel text of another domain than the handbook's, and keeps only messages none of the training
wheels holds.

A message pair is kept when both sides are one line of plain text (no format placeholders, markup or accelerator
keys, which would let a model match translations by their punctuation instead of their meaning), the English has
at least ``MIN_WORDS`` words, the translation differs from it, and both fit a unit (``UNIT_BYTES``).

    python tools/catalogues.py            # fetch the wheels (pip download, hashes checked) and count the pairs
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blcm.data.corpus import in_valid_split  # noqa: E402
from primitives.export import file_sha256  # noqa: E402

CACHE = REPO / "runs" / "catalogues"
UNIT_BYTES = 128
MIN_WORDS = 3
VALID_PERCENT = 5  # of the training wheels' English messages, by a hash of the message: their own held-out split

# name: (version, SHA-256 of the wheel, role): "train", or "held_out" (another domain, never trained on).
WHEELS = {
    "django": ("5.1.4", "236e023f021f5ce7dee5779de7b286565fdea5f4ab86bae5338e3f7b69896cf0", "train"),
    "pretix": ("2026.8.0", "a78932e698778d873530d67f25a57c28d1c09b1bfb1a22ec817c00d90397db85", "train"),
    "weblate": ("5.14.3", "0bc2c5a49ebc496758e89f08d5ec9d1b226e8aba2cff7744a18ab9f235dca816", "train"),
    "wagtail": ("8.0.1", "1e6ad5c7891a54efce1400e168298b5a2cc343b642cee89c31bf5ec30c98b26c", "train"),
    "sphinx": ("8.1.3", "09719015511837b76bf6e03e42eb7595ac8c2e41eeb9c29c5b755c6b677992a2", "held_out"),
}
# printf/format placeholders, markup, entities, accelerators, escapes: what a sentence of plain text has none of.
NOT_PLAIN = re.compile(r"%|\{|\}|<|>|&|_\w|\\|\n|\t|https?:")


def wheel(name: str, cache: Path = CACHE) -> Path:
    """The pinned wheel of ``name``, downloaded into ``cache`` once (pip, --require-hashes), its hash checked."""
    version, digest, _ = WHEELS[name]
    found = [p for p in cache.glob("*.whl") if p.name.lower().startswith(f"{name}-{version}-")]
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirement:
            requirement.write(f"{name}=={version} --hash=sha256:{digest}\n")
            requirement.flush()
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
                            "--only-binary", ":all:", "-r", requirement.name, "-d", str(cache)], check=True)
        found = [p for p in cache.glob("*.whl") if p.name.lower().startswith(f"{name}-{version}-")]
    if len(found) != 1 or file_sha256(found[0]) != digest:
        raise SystemExit(f"{cache}: no wheel of {name} {version} with SHA-256 {digest} (delete the folder and "
                         "fetch again)")
    return found[0]


def messages(path: Path) -> Iterator[tuple[str, str, str]]:
    """(locale, English message, translation) of every translated message of every .mo file in a wheel; a context
    prefix is dropped, plural forms are skipped."""
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            parts = name.split("/")
            if not name.endswith(".mo") or "LC_MESSAGES" not in parts:
                continue
            locale = parts[parts.index("LC_MESSAGES") - 1]
            for english, translation in mo_entries(archive.read(name)):
                if english and "\x00" not in english:  # a NUL joins a message's plural forms
                    yield locale, english.rpartition("\x04")[2], translation


def mo_entries(data: bytes) -> Iterator[tuple[str, str]]:
    """(message, translation) of a compiled gettext catalogue (GNU .mo: a magic number, the count and two tables of
    (length, offset) pairs); the header entry (the empty message) included. UTF-8 is assumed, as every pinned wheel's
    catalogue declares; an undecodable entry is skipped."""
    order = "<" if data[:4] == b"\xde\x12\x04\x95" else ">" if data[:4] == b"\x95\x04\x12\xde" else None
    if order is None:
        raise ValueError("not a GNU .mo catalogue")
    count, originals, translations = struct.unpack(order + "3I", data[8:20])
    for i in range(count):
        entries = []
        for table in (originals, translations):
            length, offset = struct.unpack(order + "2I", data[table + 8 * i : table + 8 * i + 8])
            entries.append(data[offset : offset + length])
        try:
            yield entries[0].decode(), entries[1].decode()
        except UnicodeDecodeError:
            continue


def plain_pair(english: str, translation: str) -> bool:
    """Whether a message pair is kept (see the module docstring)."""
    return (len(english.split()) >= MIN_WORDS and translation.strip() != english.strip()
            and not NOT_PLAIN.search(english) and not NOT_PLAIN.search(translation)
            and len(english.encode()) <= UNIT_BYTES and 0 < len(translation.encode()) <= UNIT_BYTES)


def catalogue(names: list[str], cache: Path = CACHE) -> dict[str, dict[str, str]]:
    """English message -> {locale: translation} over the wheels ``names`` (plain pairs only)."""
    out: dict[str, dict[str, str]] = {}
    for name in names:
        for locale, english, translation in messages(wheel(name, cache)):
            if plain_pair(english, translation):
                out.setdefault(english.strip(), {}).setdefault(locale, translation.strip())
    return out


def training_names() -> list[str]:
    return [name for name, (_, _, role) in WHEELS.items() if role == "train"]


def catalogue_pairs(split: str, cache: Path = CACHE) -> list[tuple[bytes, bytes]]:
    """(English, translation) pairs of the training wheels' messages in ``split`` ("train" or "valid", by a hash of
    the English message)."""
    if split not in ("train", "valid"):
        raise ValueError(f"split {split!r}: give train or valid")
    return [(english.encode(), text.encode()) for english, by_locale in catalogue(training_names(), cache).items()
            if in_valid_split(english, VALID_PERCENT) == (split == "valid") for text in by_locale.values()]


def held_out_records(cache: Path = CACHE) -> list[dict[str, str]]:
    """The held-out wheels' messages that no training wheel holds, as parallel records ({"en": ..., locale: ...},
    the shape blcm.eval.search.crosslingual reads)."""
    trained = set(catalogue(training_names(), cache))
    held = catalogue([name for name, (_, _, role) in WHEELS.items() if role == "held_out"], cache)
    return [{"en": english, **by_locale} for english, by_locale in sorted(held.items()) if english not in trained]


def main() -> int:
    for split in ("train", "valid"):
        pairs = catalogue_pairs(split)
        print(f"training wheels, {split}: {len(pairs)} pairs of {len({a for a, _ in pairs})} English messages")
    records = held_out_records()
    print(f"held out ({', '.join(n for n, w in WHEELS.items() if w[2] == 'held_out')}): {len(records)} English "
          f"messages, {sum(len(r) - 1 for r in records)} translations in "
          f"{len({k for r in records for k in r if k != 'en'})} locales")
    return 0


if __name__ == "__main__":
    sys.exit(main())
