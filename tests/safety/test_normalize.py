"""Folding: width, case, invisibles, traditional characters, separators and the offset map."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpchat.safety.normalize import PAUSE, SEPARATOR, compact, default_normalizer


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("ＣＡＳＩＮＯ", "casino"),  # full-width
        ("CaSiNo", "casino"),
        ("Straße", "strasse"),  # case folding, not lower()
        ("cafe\u0301", "cafe"),  # a lone combining accent
        ("café", "cafe"),  # and a precomposed one fold alike
        ("ⓒⓐⓢⓘⓝⓞ", "casino"),  # circled letters
        ("𝐜𝐚𝐬𝐢𝐧𝐨", "casino"),  # mathematical bold
        ("賭博", "赌博"),  # traditional -> simplified
        ("網絡賭場", "网络赌场"),
        ("啓", "启"),  # a Taiwan variant
        ("敏\u200b感\u200d词\ufeff", "敏感词"),  # zero-width space, joiner, BOM
        ("敏\u00ad感\u2060词", "敏感词"),  # soft hyphen, word joiner
        ("敏\ufe0f感\U000e0041词", "敏感词"),  # variation selector, tag
        ("敏\u0336感\u20dd", "敏感"),  # strike-through and enclosing marks
        ("\u3164敏", "敏"),  # Hangul filler
        ("が", "が"),  # kana keep their voicing mark
        ("한국어", "한국어"),
        ("①", "1"),
    ],
)
def test_fold(text: str, folded: str) -> None:
    assert default_normalizer().fold(text) == folded


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("敏 感", f"敏{SEPARATOR}感"),
        ("敏*感-词_", f"敏{SEPARATOR}感{SEPARATOR}词{SEPARATOR}"),
        ("敏🎲感", f"敏{SEPARATOR}感"),
        ("敏　感", f"敏{SEPARATOR}感"),  # ideographic space
        ("敏。感，词！", f"敏{PAUSE}感{PAUSE}词{PAUSE}"),
        ("敏\n感“词”", f"敏{PAUSE}感{PAUSE}词{PAUSE}"),
        ("a.b,c", f"a{PAUSE}b{PAUSE}c"),
    ],
)
def test_separators_and_pauses(text: str, folded: str) -> None:
    assert default_normalizer().fold(text) == folded
    assert compact(folded) == folded.replace(SEPARATOR, "").replace(PAUSE, "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", [0, 1, 2]),
        ("a\u200bb", [0, 2]),  # the removed character leaves a hole
        ("ﬁx", [0, 0, 1]),  # the ligature expands: both letters come from index 0
        ("㈱x", [0, 0, 0, 1]),  # "(株)"
        ("\u200b\u200b赌", [2]),
    ],
)
def test_offsets(text: str, expected: list[int]) -> None:
    norm = default_normalizer()
    assert len(norm.fold(text)) == len(expected)
    assert list(norm.offsets(text)) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_folding_is_per_character(left: str, right: str) -> None:
    """The streaming guard folds pieces separately: that must equal folding the whole."""
    norm = default_normalizer()
    assert norm.fold(left + right) == norm.fold(left) + norm.fold(right)
    offsets = norm.offsets(left + right)
    assert len(offsets) == len(norm.fold(left + right))
    assert list(offsets) == sorted(offsets)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_folding_is_idempotent(text: str) -> None:
    norm = default_normalizer()
    once = norm.fold(text)
    assert norm.fold(once) == once
