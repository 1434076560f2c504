"""Whether a text shows nothing: only spaces and characters that render as nothing.

Zero-width spaces and joiners, bidi controls, the BOM and other format characters (``Cf``),
combining marks alone (``Mn``, ``Me``: variation selectors), controls (``Cc``), separators
(``Z*``), unassigned code points, and the blank letters (Hangul fillers, braille blank)
that are used to fake empty names and messages.
"""

from __future__ import annotations

import unicodedata

__all__ = ["is_blank"]

_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Cn", "Mn", "Me", "Zs", "Zl", "Zp"})
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def is_blank(text: str) -> bool:
    return all(ch.isspace() or ch in _BLANK_LETTERS
               or unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in text)
