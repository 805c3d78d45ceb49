"""A unit as text for people: the one way commands, reports and TensorBoard samples show bytes."""

from __future__ import annotations


def unit_text(unit: bytes | str, limit: int = 200, *, cell: bool = False) -> str:
    """``unit`` on one line: invalid UTF-8 replaced, newlines shown as ⏎, cut to ``limit`` characters (…).
    ``cell``: fit for a markdown table cell too (``|`` escaped, outer whitespace dropped, empty shown as ∅)."""
    text = unit.decode("utf-8", errors="replace") if isinstance(unit, bytes) else unit
    text = text.replace("\n", "⏎")
    text = text if len(text) <= limit else text[:limit] + "…"
    return (text.replace("|", "\\|").strip() or "∅") if cell else text
