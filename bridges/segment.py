"""Segmenters: cut a document (raw bytes) into the units that become concepts.

Every segmenter is lossless: ``b"".join(split(doc)) == doc`` for any bytes, valid UTF-8 or not;
units are never empty and never longer than ``max_bytes`` (the byte encoder and decoder have a
fixed budget per unit). Three kinds:

* ``SentenceSegmenter``  text: sentences in many scripts, long ones re-split at clause breaks;
* ``EntropySegmenter``   other bytes (audio, images, binaries): cuts where an entropy model is
  surprised, the same signal BLT uses for patches, at a coarser scale;
* ``FixedSegmenter``     spans of a fixed size, a baseline;
* ``ModalitySegmenter``  any file: sniffs the document (bridges.modality) and cuts text with one
  segmenter, everything else (audio, images, binaries) with another.

``to_config()`` gives a JSON-able dict with a ``kind`` key and ``build_segmenter`` inverts it, so
an exported model can record how its units were cut.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from blt.ids import OFFSET
from blt.patching import check_threshold
from bridges.modality import sniff

# ---------------------------------------------------------------------------------------------
# Byte patterns for sentences. Everything is a complete UTF-8 sequence that starts with a lead
# byte, so on valid UTF-8 a match can only begin and end at character boundaries.

# ASCII whitespace and the ideographic space U+3000. No-break spaces are left out on purpose:
# they glue words together, they do not separate sentences.
_WS = rb"(?:[ \t\n\r\f\v]|\xe3\x80\x80)"
# Closing quotes and brackets that belong to the sentence they follow: " ' ) ] } ’ ” › ) ］
# 〉 》 」 』 】, and a French » with or without the (no-break) space typography puts before it.
_CLOSER = (rb"(?:[\"')\]}]|\xe2\x80[\x99\x9d\xba]|\xef\xbc[\x89\xbd]|\xe3\x80[\x89\x8b\x8d\x8f\x91]"
           rb"|(?: |\xc2\xa0|\xe2\x80\xaf)?\xc2\xbb)")
# Tokens after which a period is not a sentence end (case-sensitive). Single letters are handled
# apart (initials "J. Smith", "e.g.", "i.e.", "U.S."). "etc.", "Inc." and the like often end a
# sentence, so they are not listed; a lowercase next word already keeps "etc. and" together.
ABBREVIATIONS = (
    "Mr", "Mrs", "Ms", "Mx", "Dr", "Prof", "Sr", "Sra", "Srta", "Jr", "St", "Mt", "Ft", "Gen", "Gov",
    "Sen", "Rep", "Rev", "Hon", "Pres", "Lt", "Col", "Capt", "Cmdr", "Sgt", "Maj", "Adm", "Messrs",
    "vs", "cf", "Fig", "Figs", "No", "Nos", "Nr", "Vol", "pp", "approx",
)
# A period, unless it closes an abbreviation. Lookbehinds follow the "." so that the engine tests
# them only at periods, not at every byte.
_PERIOD = (rb"\." + b"".join(rb"(?<!\b" + a.encode() + rb"\.)" for a in ABBREVIATIONS)
           + rb"(?<!\b[A-Za-z]\.)")
# Terminators that end a sentence only when whitespace follows: . ! ? … ؟ (Arabic) ۔ (Urdu).
_SPACED_END = rb"(?:" + _PERIOD + rb"|[!?]|\xe2\x80\xa6|\xd8\x9f|\xdb\x94)"
# Terminators that end a sentence on their own (scripts written without spaces, and the danda,
# which is a sentence mark and nothing else): 。 ！ ？ ｡ । ॥
_UNSPACED_END = rb"(?:\xe3\x80\x82|\xef\xbc[\x81\x9f]|\xef\xbd\xa1|\xe0\xa5[\xa4\xa5])"
_NO_WS_AHEAD = rb"(?![ \t\n\r\f\v]|\xe3\x80\x80)"

# A boundary is the end of a match. Each alternative swallows the whitespace that follows, so the
# next unit starts at a non-space.
_BOUNDARY = re.compile(
    # ". " "?! " ".” " — then not a lowercase ASCII letter: "e.g. the", "etc. and", '"Stop!" she'
    # continue the sentence (a sentence in a cased script rarely starts in lowercase).
    _SPACED_END + rb"+" + _CLOSER + rb"*" + _WS + rb"+(?![ \t\n\r\f\v]|\xe3\x80\x80|[a-z])"
    # "。" "？！" "。」" "। " — whitespace optional.
    + rb"|" + _UNSPACED_END + rb"(?:" + _SPACED_END + rb"|" + _UNSPACED_END + rb")*" + _CLOSER + rb"*"
    + _WS + rb"*" + _NO_WS_AHEAD
    # A paragraph break, a blank line: always a boundary, the newlines stay with the paragraph above.
    + rb"|\n[ \t\r\f\v]*\n" + _WS + rb"*"
)

# Where an over-long unit is re-split. Greedy ``.*`` makes the match end at the *last* occurrence.
# Clause marks: , ; : — ، (Arabic comma) need whitespace after them; 、 ， ； ： (full width) don't.
_LAST_CLAUSE = re.compile(
    rb"(?s).*(?:(?:[,;:]|\xe2\x80\x94|\xd8\x8c)" + _WS + rb"+|\xe3\x80\x81|\xef\xbc[\x8c\x9a\x9b])" + _WS + rb"*"
)
_LAST_SPACE = re.compile(rb"(?s).*" + _WS)


def char_start(data: bytes, cut: int) -> int:
    """``cut`` moved back to the start of the UTF-8 character it falls inside (at most 3 bytes).

    A cut that is already at a character start, or bytes that are not valid UTF-8 there (no lead
    byte whose character spans the cut), leave ``cut`` as is.
    """
    if cut >= len(data) or not 0x80 <= data[cut] < 0xC0:
        return cut
    for back in range(1, min(3, cut) + 1):
        byte = data[cut - back]
        if 0x80 <= byte < 0xC0:  # another continuation byte: keep looking for the lead
            continue
        if byte >= 0xC0:  # a lead byte: its character spans 2 (C0-DF), 3 (E0-EF) or 4 (F0-) bytes
            size = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return cut - back if size > back else cut
        return cut  # ASCII before a stray continuation byte
    return cut


# ---------------------------------------------------------------------------------------------
# The interface


class Segmenter(ABC):
    """Cuts a document into units: ``b"".join(units) == document``, each unit 1..max_bytes long."""

    kind: str
    max_bytes: int

    @abstractmethod
    def split(self, document: bytes) -> list[bytes]:
        """The units of ``document`` in order; ``[]`` for an empty document."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """A JSON-serialisable dict with a ``kind`` key; ``build_segmenter`` turns it back into this."""

    def __call__(self, document: bytes) -> list[bytes]:
        return self.split(document)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_config().items() if k != "kind")
        return f"{type(self).__name__}({fields})"


# ---------------------------------------------------------------------------------------------
# Sentences


class SentenceSegmenter(Segmenter):
    """Sentences for text in any script, capped at ``max_bytes``.

    A sentence ends after a run of terminators (. ! ? … ؟ ۔, plus closing quotes or brackets right
    after them) followed by whitespace, or after the unspaced terminators 。 ！ ？ ｡ । ॥ with or
    without whitespace. The whitespace after a sentence belongs to it, so every unit but the first
    starts at a non-space. A blank line always ends a unit.

    Not sentence ends, to keep it cheap and predictable:

    * a period after a listed title or abbreviation ("Mr.", "Dr.", "No.", "vs.": ``ABBREVIATIONS``)
      or after a single letter (initials "J. Smith", "e.g.", "i.e.", "U.S."): a sentence that
      really ends in "U.S." or "Plan B." is joined to the next one;
    * a spaced terminator followed by a lowercase ASCII letter ("etc. and", '"Stop!" she said').

    Known misses: an unspaced terminator inside a quotation is an end ("「いいえ。」彼は言った。" gives
    two units), and so is a spaced one before a capital or a digit ("Acme Inc. Ltd", "costs $5. 10").

    Units over ``max_bytes`` are re-split: after the last clause mark (, ; : — ، then whitespace,
    or 、 ， ； ：) that leaves a piece of at least a quarter of the cap, else after the last
    whitespace, else a hard cut moved back to a UTF-8 character start (bytes that are not UTF-8 are
    cut at ``max_bytes`` exactly). A cut never falls inside a character of valid UTF-8.

    All the scanning is done by ``re`` on bytes; Python only loops over sentences.
    """

    kind = "sentence"

    def __init__(self, max_bytes: int = 256):
        if not isinstance(max_bytes, int) or max_bytes < 4:
            raise ValueError(f"max_bytes must be an int >= 4 (room for one 4-byte UTF-8 character), got {max_bytes!r}")
        self.max_bytes = max_bytes

    def split(self, document: bytes) -> list[bytes]:
        document = bytes(document)
        if not document:
            return []
        ends = [m.end() for m in _BOUNDARY.finditer(document)]
        if not ends or ends[-1] != len(document):
            ends.append(len(document))
        units, start = [], 0
        for end in ends:
            if end - start <= self.max_bytes:
                units.append(document[start:end])
            else:
                units.extend(self._resplit(document[start:end]))
            start = end
        return units

    def _resplit(self, unit: bytes) -> list[bytes]:
        pieces = []
        while len(unit) > self.max_bytes:
            window = unit[: self.max_bytes]
            m = _LAST_CLAUSE.match(window)
            if m is None or m.end() < self.max_bytes // 4:
                m = _LAST_SPACE.match(window)
            cut = m.end() if m is not None else char_start(unit, self.max_bytes)
            pieces.append(unit[:cut])
            unit = unit[cut:]
        pieces.append(unit)
        return pieces

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "max_bytes": self.max_bytes}


# ---------------------------------------------------------------------------------------------
# Fixed spans


class FixedSegmenter(Segmenter):
    """Spans of ``size`` bytes, the last one shorter: a baseline that knows nothing of content.

    Cuts anywhere, inside UTF-8 characters included.
    """

    kind = "fixed"

    def __init__(self, size: int = 64):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1, got {size!r}")
        self.size = self.max_bytes = size

    def split(self, document: bytes) -> list[bytes]:
        document = bytes(document)
        return [document[i : i + self.size] for i in range(0, len(document), self.size)]

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "size": self.size}


# ---------------------------------------------------------------------------------------------
# Entropy spikes


class EntropySegmenter(Segmenter):
    """Units for bytes that are not text, cut where the entropy model is surprised.

    ``H_t`` is the model's next-byte entropy (nats) at byte t given the bytes before it. A unit
    ends before byte t when ``H_t > threshold`` and the unit is already ``min_bytes`` long (so a
    burst of surprises makes one cut, not many tiny units); a unit that reaches ``max_bytes``
    without a spike is cut there.

    With ``threshold=None`` each document gets its own threshold: the value of H at the rank whose
    cuts give a mean unit length closest to ``target_bytes``, found by bisection over the sorted
    entropies of that document (about the ``1 - 1/target_bytes`` quantile, moved by the min/max
    rules). A fixed threshold keeps the meaning of a cut comparable across documents; a per-
    document one keeps unit counts predictable on data whose entropy level varies (noise vs. silence).
    """

    kind = "entropy"

    def __init__(self, entropy_model: torch.nn.Module, threshold: float | None = None, min_bytes: int = 16,
                 max_bytes: int = 256, target_bytes: float = 64):
        if threshold is not None:
            check_threshold(threshold, "entropy")
        if not isinstance(min_bytes, int) or not isinstance(max_bytes, int) or not 1 <= min_bytes <= max_bytes:
            raise ValueError(f"need ints 1 <= min_bytes <= max_bytes, got min_bytes={min_bytes!r}, "
                             f"max_bytes={max_bytes!r}")
        if not target_bytes > 0:
            raise ValueError(f"target_bytes must be > 0, got {target_bytes!r}")
        self.entropy_model = entropy_model
        self.threshold = None if threshold is None else float(threshold)
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.target_bytes = float(target_bytes)

    def entropies(self, document: bytes) -> np.ndarray:
        """(len(document),) float32 next-byte entropies in nats; the model handles any length."""
        device = next(self.entropy_model.parameters()).device
        arr = np.frombuffer(bytes(document), dtype=np.uint8).astype(np.int64) + OFFSET
        ids = torch.from_numpy(arr)[None].to(device)  # (1, L)
        lengths = torch.tensor([len(arr)], device=device)
        return self.entropy_model.entropies(ids, lengths)[0].float().cpu().numpy()

    def cuts(self, entropies: np.ndarray, threshold: float) -> np.ndarray:
        """Positions where units start (0 excluded), given a document's entropies and a threshold.

        Greedy from the left: the next cut is the first spike at least ``min_bytes`` after the
        current start, or ``start + max_bytes`` if that comes first. One step per unit, not per byte.
        """
        n = len(entropies)
        spikes = np.flatnonzero(entropies > threshold)
        out, start = [], 0
        while True:
            i = np.searchsorted(spikes, start + self.min_bytes)
            t = int(spikes[i]) if i < len(spikes) else n
            if t - start > self.max_bytes:
                t = start + self.max_bytes
            if t >= n:
                return np.asarray(out, dtype=np.int64)
            out.append(t)
            start = t

    def calibrate(self, entropies: np.ndarray) -> float:
        """The per-document threshold: a value of H whose cuts give a mean unit near target_bytes.

        Raising the threshold removes spikes, so the mean unit length grows with the rank of the
        threshold in the sorted entropies: bisection over ranks, ~log2(len) segmentations.
        """
        n = len(entropies)
        ranked = np.sort(entropies)
        mean = lambda rank: n / (len(self.cuts(entropies, float(ranked[rank]))) + 1)
        lo, hi = 0, n - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if mean(mid) < self.target_bytes:
                lo = mid
            else:
                hi = mid
        best = min((lo, hi), key=lambda rank: abs(mean(rank) - self.target_bytes))
        return float(ranked[best])

    def split(self, document: bytes) -> list[bytes]:
        document = bytes(document)
        if len(document) <= self.min_bytes:  # no cut is possible: skip the model
            return [document] if document else []
        h = self.entropies(document)
        threshold = self.calibrate(h) if self.threshold is None else self.threshold
        bounds = [0, *self.cuts(h, threshold).tolist(), len(document)]
        return [document[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "threshold": self.threshold, "min_bytes": self.min_bytes,
                "max_bytes": self.max_bytes, "target_bytes": self.target_bytes}


# ---------------------------------------------------------------------------------------------
# Any file


class ModalitySegmenter(Segmenter):
    """Text documents go to ``text`` (sentences), all other bytes to ``other`` (fixed spans or entropy
    spikes); which is which is decided per document from its content (``bridges.modality.sniff``)."""

    kind = "modality"

    def __init__(self, text: Segmenter, other: Segmenter):
        if not isinstance(text, Segmenter) or not isinstance(other, Segmenter):
            raise ValueError("text and other must be segmenters (build_segmenter builds them from configs)")
        if isinstance(text, ModalitySegmenter) or isinstance(other, ModalitySegmenter):
            raise ValueError("a modality segmenter cannot nest another")
        self.text, self.other = text, other
        self.max_bytes = max(text.max_bytes, other.max_bytes)

    def split(self, document: bytes) -> list[bytes]:
        return (self.text if sniff(document) == "text" else self.other).split(document)

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text.to_config(), "other": self.other.to_config()}


# ---------------------------------------------------------------------------------------------
# Configs

KINDS: dict[str, type[Segmenter]] = {
    SentenceSegmenter.kind: SentenceSegmenter,
    FixedSegmenter.kind: FixedSegmenter,
    EntropySegmenter.kind: EntropySegmenter,
    ModalitySegmenter.kind: ModalitySegmenter,
}


def build_segmenter(config: dict[str, Any], entropy_model: torch.nn.Module | None = None) -> Segmenter:
    """The segmenter ``config`` describes (the inverse of ``Segmenter.to_config``).

    An ``entropy`` config stores numbers, not the model: it cuts with ``entropy_model`` when given, else
    with the entropy model shipped in the package (blt.pretrained), as `blcm prepare` does.
    """
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"a segmenter config is a dict with a 'kind' key (one of {sorted(KINDS)}), got {config!r}")
    fields = dict(config)
    kind = fields.pop("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown segmenter kind {kind!r}; choose one of {sorted(KINDS)}")
    if kind == EntropySegmenter.kind:
        if entropy_model is None:
            from blt.pretrained import load_shipped_entropy_model

            entropy_model = load_shipped_entropy_model()[0]
        fields["entropy_model"] = entropy_model
    if kind == ModalitySegmenter.kind:
        if set(fields) != {"text", "other"}:
            raise ValueError(f"a 'modality' segmenter config has 'text' and 'other' segmenter configs, got {config!r}")
        fields = {part: build_segmenter(fields[part], entropy_model) for part in ("text", "other")}
    try:
        return KINDS[kind](**fields)
    except TypeError as e:  # an unknown or missing field
        raise ValueError(f"bad {kind!r} segmenter config {config!r}: {e}") from None
