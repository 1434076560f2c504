"""Index helpers for the word filter's automata: their alphabet, and positions in folded text."""

from __future__ import annotations

import bisect
import re

from mpchat.safety.normalize import PAUSE, SEPARATOR

__all__ = ["Layout", "char_index", "octets"]

_SEPARATORS = re.compile(f"[{re.escape(SEPARATOR + PAUSE)}]")


def octets(text: str) -> str:
    """UTF-8 bytes as a str of code points 0-255, the automaton's alphabet.

    pyahocorasick finds a node's child by a linear scan, so with CJK words the root's
    thousands of children made ``iter`` ten times slower than with UTF-8 bytes, where no
    node has more than 256. UTF-8 is self-synchronising: a word's bytes can only match at a
    character boundary of the text's bytes.
    """
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


def char_index(encoded: str, octet_index: int) -> int:
    """The index of the character whose last byte is ``encoded[octet_index]``."""
    return len(encoded[: octet_index + 1].encode("latin-1").decode("utf-8", "surrogatepass")) - 1


class Layout:
    """Where the i-th letter of the compact text sits in the folded text.

    Looked up for a few candidates only, so it keeps the separators' positions (a few per
    sentence) rather than a list as long as the text.
    """

    __slots__ = ("_separators",)

    def __init__(self, folded: str) -> None:
        self._separators = [m.start() for m in _SEPARATORS.finditer(folded)]

    def __getitem__(self, index: int) -> int:
        # The smallest position with ``index`` letters before it: step over the separators
        # at or before the guess until no more are found.
        position = index
        while True:
            moved = index + bisect.bisect_right(self._separators, position)
            if moved == position:
                return position
            position = moved
