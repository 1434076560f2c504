"""Word list and allow-list files: their format, reading them, and noticing when they change.

A word list is UTF-8 (a BOM is accepted), one entry a line: ``word`` or ``word<TAB>rule``;
blank lines and lines starting with ``#`` are skipped; an entry without a rule takes the
file's stem as its rule. Every entry remembers where it came from (``ops.txt:12``, the file
and the line), so a hit can name it without repeating the word.

An allow-list has the same shape without rules: one innocent phrase a line (``反洗钱``), which
overrules any listed word found entirely inside it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "SHIPPED_SOURCE",
    "FileWatch",
    "Listed",
    "parse_allowlist",
    "parse_wordlist",
    "read_allowlists",
    "read_wordlists",
    "shipped_wordlist",
]

DEFAULT_RULE = "default"
SHIPPED_SOURCE = "default.txt"

Stamp = tuple[int, int, int] | None


class Listed(NamedTuple):
    word: str
    rule: str
    source: str = ""  # "file:line"; "" for words given in code


def parse_wordlist(text: str, *, default_rule: str) -> list[tuple[str, str]]:
    """``(word, rule)`` pairs of a word list file's text."""
    return [(word, rule) for _, word, rule in _entries(text, default_rule)]


def parse_allowlist(text: str) -> list[str]:
    """The phrases of an allow-list file's text (anything after a tab is a comment)."""
    return [line.split("\t", 1)[0].strip() for _, line in _lines(text)]


def read_wordlists(paths: Sequence[Path]) -> list[Listed]:
    listed: list[Listed] = []
    for path in paths:
        entries = _entries(_read(path), path.stem)
        listed += [Listed(word, rule, f"{path.name}:{n}") for n, word, rule in entries]
    return listed


def read_allowlists(paths: Sequence[Path]) -> list[str]:
    return [phrase for path in paths for phrase in parse_allowlist(_read(path))]


def shipped_wordlist() -> list[Listed]:
    """The small demo list shipped with the package (not a policy)."""
    text = resources.files("mpchat.safety").joinpath(f"wordlists/{SHIPPED_SOURCE}")
    entries = _entries(text.read_text(encoding="utf-8"), DEFAULT_RULE)
    return [Listed(word, rule, f"{SHIPPED_SOURCE}:{n}") for n, word, rule in entries]


class FileWatch:
    """Whether any of some files changed since the last `commit` (mtime, size, inode)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = tuple(paths)
        self._stamps = self.stamps()

    def stamps(self) -> list[Stamp]:
        return [_stamp(path) for path in self.paths]

    def changed(self, stamps: list[Stamp]) -> bool:
        return stamps != self._stamps

    def commit(self, stamps: list[Stamp]) -> None:
        self._stamps = stamps


def _entries(text: str, default_rule: str) -> list[tuple[int, str, str]]:
    """``(line number, word, rule)`` of a word list."""
    entries: list[tuple[int, str, str]] = []
    for number, line in _lines(text):
        word, _, rule = line.partition("\t")
        rule = rule.split("\t", 1)[0].strip()
        entries.append((number, word.strip(), rule or default_rule))
    return entries


def _lines(text: str) -> list[tuple[int, str]]:
    """The lines that hold an entry, numbered from 1 as an editor shows them."""
    lines = ((n, raw.strip()) for n, raw in enumerate(text.splitlines(), start=1))
    return [(n, line) for n, line in lines if line and not line.startswith("#")]


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8-sig")


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    # The inode catches an atomic rename over the file; the size catches a same-tick edit.
    return (st.st_mtime_ns, st.st_size, st.st_ino)
