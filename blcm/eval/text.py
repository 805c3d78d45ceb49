"""Bytes as text: metrics on bytes and words, reconstruction (exact, decoded byte accuracy, chrF) and generation
(ROUGE-L, REP-4, OVL-3), and ``unit_text``, the one way commands, reports and TensorBoard samples show a unit.

REP-n and OVL-n count *word* n-grams, as the LCM paper describes them (Meta's released code counts
character n-grams). Words are runs of letters/digits, lower-cased, so punctuation and case do not
split an n-gram. A text with fewer than n words has no n-grams: its REP/OVL is NaN and is left out
of means.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from bridges.frozen_codec import as_text

WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repetition(text: str, n: int = 4) -> float:
    """REP-n: the share of a text's word n-grams that repeat an earlier one (1 - unique / total)."""
    grams = ngrams(words(text), n)
    return 1 - len(set(grams)) / len(grams) if grams else math.nan


def overlap(text: str, context: str, n: int = 3) -> float:
    """OVL-n: the share of a text's word n-grams that also occur in its context."""
    grams = ngrams(words(text), n)
    if not grams:
        return math.nan
    seen = set(ngrams(words(context), n))
    return sum(g in seen for g in grams) / len(grams)


def decoded_byte_accuracy(decoded: bytes, true: bytes) -> float:
    """Position-wise byte matches of a decoded unit (greedy, each byte after the decoder's own: not teacher-forced,
    that is blcm.eval.codec's) with the true unit, over the longer of the two lengths (1 only for equal strings)."""
    longest = max(len(decoded), len(true))
    if longest == 0:
        return 1.0
    return sum(a == b for a, b in zip(decoded, true, strict=False)) / longest


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def vocabulary(texts: Sequence[bytes]) -> set[str]:
    """Every word (as ``words`` finds them) of some texts."""
    return {w for t in texts for w in words(t.decode("utf-8", errors="replace"))}


def chrf(hypotheses: Sequence[bytes], references: Sequence[bytes]) -> float:
    """Corpus chrF (sacrebleu's defaults: character 6-grams, beta 2), 0-100."""
    from sacrebleu.metrics import CHRF

    if not hypotheses:
        return math.nan
    return CHRF().corpus_score(as_text(hypotheses), [as_text(references)]).score


def rouge_l(hypotheses: Sequence[bytes], references: Sequence[bytes]) -> list[float]:
    """ROUGE-L F1 per pair (rouge-score; its tokenizer keeps lower-cased ASCII letters and digits)."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"])
    pairs = zip(as_text(hypotheses), as_text(references), strict=True)
    return [scorer.score(r, h)["rougeL"].fmeasure for h, r in pairs]


def unit_text(unit: bytes | str, limit: int = 200, *, cell: bool = False) -> str:
    """``unit`` on one line: invalid UTF-8 replaced, newlines shown as ⏎, cut to ``limit`` characters (…).
    ``cell``: fit for a markdown table cell too (``|`` escaped, outer whitespace dropped, empty shown as ∅)."""
    text = unit.decode("utf-8", errors="replace") if isinstance(unit, bytes) else unit
    text = text.replace("\n", "⏎")
    text = text if len(text) <= limit else text[:limit] + "…"
    return (text.replace("|", "\\|").strip() or "∅") if cell else text
