"""The local word filter: Aho-Corasick over operator word lists, on folded text.

Word lists and allow-lists are files (`mpchat.safety.listfiles`). Words are folded like the
text (``mpchat.safety.normalize``) and their separators dropped, so ``credit card`` and
``賭博`` are listed as ``creditcard`` and ``赌博``.

Matching runs on the folded text with its separators removed, then each candidate is judged
on the folded text with separators in place (positions in brackets are that text's):

* contiguous: always a hit (subject to word boundaries below);
* spread out (``敏 感 词``): every adjacent pair of the word's characters must be apart by 1 to
  ``max_gap`` separators, and the match must not be glued to letters on both sides, so that
  ``他爱赌。博物馆`` (a sentence break inside an innocent text) and ``六合，彩虹`` do not hit;
* words starting or ending with a Latin/Greek/Cyrillic letter or digit need a word boundary
  there (``ass`` does not hit ``class``; ``赌博casino`` still hits ``casino``).

An allow-list names innocent phrases (``反洗钱``): a hit lying entirely inside one of them is
not a hit (compared like words: folded, separators dropped).

Hits carry spans of the original text and the list file the word came from. The automata
are built once per list and swapped whole when ``reload_if_changed`` sees a file change, so
a reader never sees half a list.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import ahocorasick

from mpchat.safety._automaton import Layout, char_index, octets
from mpchat.safety.allowlist import AllowList
from mpchat.safety.listfiles import (
    DEFAULT_RULE,
    FileWatch,
    Listed,
    parse_wordlist,
    read_allowlists,
    read_wordlists,
    shipped_wordlist,
)
from mpchat.safety.normalize import (
    PAUSE,
    SEPARATOR,
    Normalizer,
    compact,
    default_normalizer,
    is_separator,
    is_spaced_word_char,
)

__all__ = ["Hit", "Listed", "WordFilter", "parse_wordlist"]

_log = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class Hit:
    rule: str
    word: str  # as listed
    start: int  # span in the original text
    end: int
    # The list file the word came from ("" for words given in code); not part of equality,
    # so two hits of the same word are the same hit whichever file listed it.
    source: str = field(default="", compare=False)


class _Verdict(Enum):
    HIT = 1
    NO = 2
    PENDING = 3  # depends on text that has not arrived yet (streaming only)


@dataclass(frozen=True, slots=True)
class _Entry:
    word: str
    rule: str
    source: str
    size: int  # characters once folded and compacted
    spaces: frozenset[int]  # i where the word as listed has a space between characters i, i+1
    bound_left: bool
    bound_right: bool


@dataclass(frozen=True, slots=True)
class _Compiled:
    automaton: Any  # ahocorasick.Automaton has no type stubs
    entries: tuple[_Entry, ...]
    max_size: int
    allowed: AllowList | None  # phrases that overrule a hit inside them


class WordFilter:
    """Finds listed words in text. Build with ``from_files`` or ``from_words``."""

    def __init__(
        self,
        pairs: Iterable[tuple[str, str] | Listed],
        *,
        allow: Iterable[str] = (),
        paths: Sequence[Path] = (),
        allow_paths: Sequence[Path] = (),
        max_gap: int = 3,
        min_interval: float = 0.0,
        normalizer: Normalizer | None = None,
    ) -> None:
        if max_gap < 1:
            raise ValueError("max_gap must be at least 1")
        self.max_gap = max_gap
        self._normalizer = normalizer or default_normalizer()
        self._paths, self._allow_paths = tuple(paths), tuple(allow_paths)
        self._watch = FileWatch(self._paths + self._allow_paths)
        self._min_interval = min_interval
        self._checked = time.monotonic()
        self._compiled = self._compile(pairs, allow)

    @classmethod
    def from_files(
        cls, paths: Sequence[Path], *, allow: Sequence[Path] = (), max_gap: int = 3,
        min_interval: float = 0.0,
    ) -> WordFilter:
        """Load word lists (an empty sequence means the list shipped with the package) and
        allow-lists.

        A missing file raises ``OSError`` here, at start-up; later, on reload, it is logged
        and the last good list stays in force.
        """
        paths, allow = [Path(path) for path in paths], [Path(path) for path in allow]
        listed = read_wordlists(paths) if paths else shipped_wordlist()
        return cls(listed, allow=read_allowlists(allow), paths=paths, allow_paths=allow,
                   max_gap=max_gap, min_interval=min_interval)

    @classmethod
    def from_words(
        cls, words: Iterable[str | tuple[str, str]], *, allow: Iterable[str] = (),
        max_gap: int = 3,
    ) -> WordFilter:
        """A filter over words given in code; a bare word gets the rule ``default``."""
        pairs = [(w, DEFAULT_RULE) if isinstance(w, str) else w for w in words]
        return cls(pairs, allow=allow, max_gap=max_gap)

    @property
    def size(self) -> int:
        """How many distinct words are listed (after folding)."""
        return len(self._compiled.entries)

    @property
    def context_chars(self) -> int:
        """Folded characters of released text a streaming scan needs before new text: for
        word boundaries and gaps, and for an allowed phrase that began before a hit."""
        allowed = self._compiled.allowed
        return self.max_gap + 2 + (2 * allowed.max_size if allowed is not None else 0)

    @property
    def max_word_size(self) -> int:
        """The longest listed word, in folded characters (bounds the streaming hold-back)."""
        return self._compiled.max_size

    def fold(self, text: str) -> str:
        """The text as the matcher sees it (separators shown as ``" "`` and ``","``)."""
        return self._normalizer.fold(text)

    def find(self, text: str) -> list[Hit]:
        """Every hit, ordered by where it ends."""
        return self.scan(text, final=True)[0]

    def first(self, text: str) -> Hit | None:
        """The hit that ends first, without looking for the rest."""
        hits = self.scan(text, final=True, stop_at_first=True)[0]
        return hits[0] if hits else None

    def reload_if_changed(self) -> bool:
        """Rebuild from the files if one changed; cheap enough to call on every request."""
        if not self._watch.paths:
            return False
        now = time.monotonic()
        if now - self._checked < self._min_interval:
            return False
        self._checked = now
        stamps = self._watch.stamps()
        if not self._watch.changed(stamps):
            return False
        try:
            # Stamps are taken before reading: an edit during the read shows up next time.
            listed = read_wordlists(self._paths) if self._paths else shipped_wordlist()
            compiled = self._compile(listed, read_allowlists(self._allow_paths))
        except (OSError, UnicodeDecodeError) as exc:
            _log.warning("word list reload failed, keeping the previous list: %s", exc)
            return False
        self._compiled = compiled
        self._watch.commit(stamps)
        _log.info("word lists reloaded: %d words", len(compiled.entries))
        return True

    def scan(
        self, text: str, *, final: bool, left: str = "", stop_at_first: bool = False
    ) -> tuple[list[Hit], int]:
        """Hits in ``text`` and the index from which its tail might start a hit.

        For the streaming guard: ``left`` is the folded tail of the text before ``text``
        (context for word boundaries and gaps, never part of a span); with ``final=False``
        the end of ``text`` is not the end of the answer, so a hit that depends on what
        follows is not reported, and the returned index is where to hold back from.
        """
        compiled = self._compiled
        norm = self._normalizer
        folded = left + norm.fold(text)
        packed = compact(folded)
        hits: list[Hit] = []
        if not packed or not compiled.entries:
            return hits, len(text)
        positions: Layout | None = None
        offsets: Sequence[int] | None = None

        def original(index: int, *, end: bool = False) -> int:
            nonlocal offsets
            if offsets is None:
                offsets = norm.offsets(text)
            body = index - len(left)
            if body < 0:
                return 0
            return offsets[body] + 1 if end else offsets[body]

        context = len(compact(left))
        encoded = octets(packed)
        narrow = len(encoded) == len(packed)
        pending: int | None = None  # folded start of the first hit that waits for more text
        for octet_stop, number in compiled.automaton.iter(encoded):
            entry = compiled.entries[number]
            stop = octet_stop if narrow else char_index(encoded, octet_stop)
            first = stop - entry.size + 1
            if first < context:
                # Starts in text already released, so it was judged (and held) back then;
                # only the last few characters of it are here, too few to judge it again.
                continue
            if positions is None:
                positions = Layout(folded)
            verdict = self._judge(entry, folded, positions, first, stop, final)
            if verdict is not _Verdict.NO and compiled.allowed is not None:
                ruling = compiled.allowed.overrules(folded, positions, packed, encoded,
                                                    first=first, stop=stop, final=final)
                if ruling != "no":
                    verdict = _Verdict.NO if ruling == "yes" else _Verdict.PENDING
            if verdict is _Verdict.HIT:
                start, end = positions[first], positions[stop]
                hits.append(Hit(entry.rule, entry.word, original(start),
                                original(end, end=True), entry.source))
                if stop_at_first:
                    break
            elif verdict is _Verdict.PENDING and pending is None:
                pending = positions[first]
        if final:
            return hits, len(text)
        if positions is None:
            positions = Layout(folded)
        hold = self._hold_start(compiled, folded, packed, positions)
        if pending is not None and (hold is None or pending < hold):
            hold = pending  # a hit an allowed phrase may yet overrule: held back whole
        return hits, len(text) if hold is None else original(hold)

    def _judge(
        self,
        entry: _Entry,
        folded: str,
        positions: Layout,
        first: int,
        last: int,
        final: bool,
    ) -> _Verdict:
        start, end = positions[first], positions[last]
        before = folded[start - 1] if start > 0 else None
        after = folded[end + 1] if end + 1 < len(folded) else None
        pending = False
        if end - start != last - first:
            gaps = [positions[i + 1] - positions[i] - 1 for i in range(first, last)]
            if any(gap > self.max_gap for gap in gaps):
                return _Verdict.NO
            as_listed = all(gap == 0 or i in entry.spaces for i, gap in enumerate(gaps))
            if not as_listed:
                # Spread out: a separator between every two characters, or no hit at all
                # (``六合，彩虹`` is two words, not a spread-out ``六合彩``).
                if not all(gaps):
                    return _Verdict.NO
                # Two characters split by punctuation only, glued to letters on both sides, is
                # how two innocent sentences meet (``他爱赌。博物馆``), not an evasion.
                if entry.size == 2 and folded[start + 1 : end] == PAUSE * gaps[0]:
                    if before is not None and not is_separator(before):
                        if after is None:
                            pending = not final
                        elif not is_separator(after):
                            return _Verdict.NO
        if entry.bound_left and before is not None and is_spaced_word_char(before):
            return _Verdict.NO
        if entry.bound_right:
            if after is None:
                pending = pending or not final
            elif is_spaced_word_char(after):
                return _Verdict.NO
        return _Verdict.PENDING if pending else _Verdict.HIT

    def _hold_start(
        self, compiled: _Compiled, folded: str, packed: str, positions: Layout
    ) -> int | None:
        """Folded index where the longest tail that could still grow into a hit starts.

        Deliberately looser than ``_judge`` (any gaps up to ``max_gap``): holding a few
        characters too many costs a few milliseconds of latency, holding too few leaks.
        """
        count = len(packed)
        if len(folded) - 1 - positions[count - 1] > self.max_gap:
            return None
        for size in range(min(compiled.max_size, count), 0, -1):
            first = count - size
            # ``match`` is true for any prefix of a listed word, the whole word included.
            if not compiled.automaton.match(octets(packed[first:])):
                continue
            gaps = (positions[i + 1] - positions[i] - 1 for i in range(first, count - 1))
            if all(gap <= self.max_gap for gap in gaps):
                return positions[first]
        return None

    def _compile(
        self, pairs: Iterable[tuple[str, str] | Listed], allow: Iterable[str]
    ) -> _Compiled:
        automaton = ahocorasick.Automaton()
        entries: list[_Entry] = []
        fold = self._normalizer.fold
        for item in pairs:
            word, rule, source = item if isinstance(item, Listed) else Listed(*item)
            folded = fold(word).strip(SEPARATOR + PAUSE)
            key = compact(folded)
            # A word that folds to nothing would match everywhere; a duplicate keeps its first rule.
            if not key or automaton.exists(octets(key)):
                continue
            automaton.add_word(octets(key), len(entries))
            positions = Layout(folded)
            entries.append(
                _Entry(
                    word=word,
                    rule=rule,
                    source=source,
                    size=len(key),
                    spaces=frozenset(
                        i for i in range(len(key) - 1) if positions[i + 1] > positions[i] + 1
                    ),
                    bound_left=is_spaced_word_char(key[0]),
                    bound_right=is_spaced_word_char(key[-1]),
                )
            )
        if entries:
            automaton.make_automaton()
        return _Compiled(
            automaton=automaton,
            entries=tuple(entries),
            max_size=max((e.size for e in entries), default=0),
            allowed=AllowList.build(allow, self._normalizer.fold),
        )

