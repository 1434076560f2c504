"""Fold text into the form the word filter matches on, one character at a time.

Every step is a per-character mapping, so folding is context free: folding a text piece by
piece gives the same result as folding it whole (the streaming guard relies on this), and an
offset map back to the original text is cheap to build. The steps, per character:

1. NFKC, case folding, NFKC again (full-width to half-width, ligatures, circled letters);
2. Latin/Greek/Cyrillic letters lose their accents (``é`` -> ``e``), other scripts keep them;
3. invisible characters are removed: format characters (``Cf``: zero-width space/joiners,
   soft hyphen, bidi controls, tags), combining marks (``Mn``/``Me``: variation selectors,
   strike-through overlays, a lone accent) and the Hangul fillers;
4. traditional Chinese becomes simplified, per character, from OpenCC's own dictionaries
   (``hk2s`` then ``tw2s``);
5. everything else that is neither a letter nor a digit becomes a separator, which the matcher
   skips: sentence and clause punctuation, brackets, quotes and line breaks become ``PAUSE``
   (what innocent text puts between two words); spaces, other punctuation, symbols, emoji,
   control and private-use characters become ``SEPARATOR`` (what an evasion puts between
   two characters: Chinese does not put spaces or ``*`` inside a word).

The whole thing is one ``str.translate`` table built once per process (about 0.1-0.2 s):
OpenCC itself converts at about 2.5 us per character, ten times the budget for a 2,000
character message, while the table does the lot in about 0.1 ms. The image builds the table
once more at build time (`mpchat.safety.foldtable`), so an instance starting from zero loads
it instead of building it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

__all__ = [
    "PAUSE",
    "SEPARATOR",
    "FoldTable",
    "Normalizer",
    "build_fold_table",
    "compact",
    "default_normalizer",
    "is_separator",
    "is_spaced_word_char",
]

SEPARATOR = " "
PAUSE = ","

# Checked after NFKC, so full-width forms are covered by their ASCII twins.
_PAUSES = frozenset(".,;:!?\n\r\x0b\x0c\x85\u2028\u2029。、‥")
_PAUSE_CATEGORIES = frozenset({"Ps", "Pe", "Pi", "Pf"})

# Letters that render as nothing but are not ``Cf`` (Hangul fillers, used to fake blank names).
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
_REMOVED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})
# The planes with assigned characters we fold; planes 4-13 are empty and 15-16 are private use.
_RANGES = (range(0x0000, 0xD800), range(0xE000, 0x40000), range(0xE0000, 0xE1000))
_OPENCC_DICTS = ("TSCharacters.txt", "TWVariantsRev.txt", "HKVariantsRev.txt")


def is_spaced_word_char(ch: str) -> bool:
    """A letter or digit of a script written with spaces between words (Latin, Greek, Cyrillic).

    Words of those scripts only match on word boundaries; CJK has no spaces to look for.
    """
    code = ord(ch)
    return ch.isalnum() and (code < 0x0530 or 0x1E00 <= code < 0x2000)


FoldTable = dict[int, str | None]  # str.translate's table: None deletes the character


class Normalizer:
    """The folding table and the offset map; one per process (``default_normalizer``)."""

    def __init__(self, table: FoldTable) -> None:
        self._table = table
        # Characters that delete or expand: only texts holding one need a real offset map.
        self._variable = _char_class(
            [code for code, folded in table.items() if folded is None or len(folded) != 1])

    def fold(self, text: str) -> str:
        return text.translate(self._table)

    def offsets(self, text: str) -> Sequence[int]:
        """For each index of ``fold(text)``, the index of the original character it came from."""
        if self._variable.search(text) is None:
            return range(len(text))
        result: list[int] = []
        table = self._table
        for index, ch in enumerate(text):
            folded = table.get(ord(ch), ch)
            if folded:
                result.extend([index] * len(folded))
        return result


def is_separator(ch: str) -> bool:
    return ch == SEPARATOR or ch == PAUSE


def compact(folded: str) -> str:
    """Folded text without its separators: what the automaton runs over."""
    return folded.replace(SEPARATOR, "").replace(PAUSE, "")


@cache
def default_normalizer() -> Normalizer:
    """The shared normaliser, made on first use (never at import time): from the table the
    image prebuilt when it was built from this code, else built here."""
    # Imported here: foldtable builds its file with build_fold_table from this module.
    from mpchat.safety.foldtable import load_prebuilt

    return Normalizer(load_prebuilt() or build_fold_table())


def build_fold_table(t2s: dict[str, str] | None = None) -> FoldTable:
    """Every character that folding changes, with what it becomes (the module docstring)."""
    table: FoldTable = {}
    simplified = _opencc_char_table() if t2s is None else t2s
    for block in _RANGES:
        for code in block:
            ch = chr(code)
            folded = _fold_char(ch, simplified)
            if folded != ch:
                table[code] = folded or None
    return table


def _fold_char(ch: str, simplified: dict[str, str]) -> str:
    category = unicodedata.category(ch)
    if category == "Cn":
        # Unassigned (in this Python's Unicode) stays as is: mapping the 113,000 of them to
        # separators would make the table ten times larger for characters nobody can type.
        return ch
    if category == "Lo" and ch not in simplified and ch not in _INVISIBLE_LETTERS:
        # Most of the table's build time: CJK and other caseless letters, nearly all unchanged.
        if unicodedata.is_normalized("NFKC", ch):
            return ch
    if ch in _INVISIBLE_LETTERS or category in _REMOVED_CATEGORIES:
        return ""
    out: list[str] = []
    for part in unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", ch).casefold()):
        category = unicodedata.category(part)
        if part in _INVISIBLE_LETTERS or category in _REMOVED_CATEGORIES:
            continue
        if category[0] in "LN" or category == "Mc":
            out.append(simplified.get(part) or _strip_accents(part))
        elif part in _PAUSES or category in _PAUSE_CATEGORIES:
            out.append(PAUSE)
        else:
            out.append(SEPARATOR)
    return "".join(out)


def _strip_accents(ch: str) -> str:
    decomposed = unicodedata.normalize("NFD", ch)
    base = "".join(c for c in decomposed if unicodedata.category(c) not in _REMOVED_CATEGORIES)
    # Only for spaced scripts: stripping the dakuten of kana would merge distinct words.
    return base if base and len(base) == 1 and is_spaced_word_char(base) else ch


def _opencc_char_table() -> dict[str, str]:
    """Traditional -> simplified per character, as OpenCC converts each character alone."""
    import opencc  # slow to import, and only needed while the table is built

    hk2s, tw2s = opencc.OpenCC("hk2s"), opencc.OpenCC("tw2s")
    folder = Path(opencc.__file__).parent / "dictionary"
    result: dict[str, str] = {}
    for name in _OPENCC_DICTS:
        for line in (folder / name).read_text(encoding="utf-8").splitlines():
            key = line.split("\t", 1)[0]
            if len(key) != 1 or key in result:
                continue
            value = tw2s.convert(hk2s.convert(key)).split(" ", 1)[0]
            if len(value) == 1 and value != key:
                result[key] = value
    # Chains (a -> b -> c) are followed so folding is idempotent.
    for key, value in result.items():
        seen = {key}
        while value in result and value not in seen:
            seen.add(value)
            value = result[value]
        result[key] = value
    return result


def _char_class(codes: list[int]) -> re.Pattern[str]:
    """A regex matching any of ``codes``, fast on long texts.

    A class holding astral characters is searched range by range for every character of
    the text; one of BMP characters only is a bitmap. So the astral part gets its own class
    behind a cheap "is this astral at all" test.
    """
    bmp = [code for code in codes if code < 0x10000]
    astral = [code for code in codes if code >= 0x10000]
    parts = [f"[{''.join(_class_ranges(bmp))}]"] if bmp else []
    if astral:
        parts.append(f"(?=[\\U00010000-\\U0010ffff])[{''.join(_class_ranges(astral))}]")
    return re.compile("|".join(parts) or "(?!)")


def _class_ranges(codes: list[int]) -> Iterator[str]:
    """``[a, b, c, x]`` -> ``a-c``, ``x``: a compact regex character class."""
    runs: list[list[int]] = []
    for code in sorted(codes):
        if runs and code == runs[-1][1] + 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    for first, last in runs:
        low, high = re.escape(chr(first)), re.escape(chr(last))
        yield low if first == last else f"{low}-{high}"
