"""The allow-list: innocent phrases (``反洗钱``) that overrule a listed word found inside them.

Phrases are compared like listed words: folded, separators dropped, and a phrase starting or
ending with a Latin/Greek/Cyrillic letter needs a word boundary there (``scam alert`` covers
"a scam alert" but not "a scam, alerted"). A hit is overruled only when one occurrence of a
phrase covers all of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import ahocorasick

from mpchat.safety._automaton import Layout, char_index, octets
from mpchat.safety.normalize import compact, is_spaced_word_char

__all__ = ["AllowList", "Ruling"]

# yes: overruled; no: the hit stands; maybe: text still to come decides (streaming only).
Ruling = Literal["yes", "no", "maybe"]


class AllowList:
    def __init__(self, keys: Iterable[str]) -> None:
        """``keys``: phrases already folded and compacted."""
        self._automaton: Any = ahocorasick.Automaton()  # no type stubs
        sizes = [0]
        for key in set(keys):
            self._automaton.add_word(octets(key), len(key))
            sizes.append(len(key))
        self._automaton.make_automaton()
        self.max_size = max(sizes)

    @classmethod
    def build(cls, phrases: Iterable[str], fold: Callable[[str], str]) -> AllowList | None:
        keys = {compact(fold(phrase)) for phrase in phrases} - {""}
        return cls(keys) if keys else None

    def overrules(self, folded: str, positions: Layout, packed: str, encoded: str, *,
                  first: int, stop: int, final: bool) -> Ruling:
        """Whether a phrase covers the hit ``packed[first:stop + 1]`` (indices of the compact
        text ``packed``, whose UTF-8 octets are ``encoded``; ``folded`` is it with separators,
        ``positions`` maps one to the other); with ``final=False`` the text may go on."""
        narrow = len(encoded) == len(packed)
        waiting = False
        for octet_end, size in self._automaton.iter(encoded):
            end = octet_end if narrow else char_index(encoded, octet_end)
            start = end - size + 1
            if start <= first and stop <= end:
                standing = _stands_alone(folded, positions[start], positions[end], final)
                if standing == "yes":
                    return "yes"
                waiting = waiting or standing == "maybe"
        if final:
            return "no"
        if waiting:
            return "maybe"
        # A phrase that started at or before the hit and is not complete yet may still cover it.
        for begin in range(max(0, first - self.max_size + 1), first + 1):
            tail = packed[begin:]
            if len(tail) < self.max_size and self._automaton.match(octets(tail)):
                return "maybe"
        return "no"


def _stands_alone(folded: str, start: int, end: int, final: bool) -> Ruling:
    """Whether ``folded[start:end + 1]`` has word boundaries where Latin letters need them."""
    if (is_spaced_word_char(folded[start]) and start > 0
            and is_spaced_word_char(folded[start - 1])):
        return "no"
    if is_spaced_word_char(folded[end]):
        if end + 1 == len(folded):
            return "yes" if final else "maybe"
        if is_spaced_word_char(folded[end + 1]):
            return "no"
    return "yes"
