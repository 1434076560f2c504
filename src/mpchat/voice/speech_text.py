"""An answer's text made speakable, and cut into sentences for sentence-by-sentence playback.

`speakable` removes what cannot be read aloud (code blocks, inline code marks, Markdown
syntax, images, URLs, emoji, table rules) and spells out what synthesisers misread
(`RULES`: units after numbers, percentages, currency, dates, times, ranges, minus signs),
the Chinese way. `sentences` cuts the result after 。！？；… and line ends, so the first
sentence can be spoken while the rest of the answer is still being written.
"""

from __future__ import annotations

import re

__all__ = ["RULES", "sentences", "speakable"]

_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]*)`")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_URL = re.compile(r"(?:https?://|www\.)[^\s\u3000-\u303f\uff00-\uffef）)\]]+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE)
_QUOTE = re.compile(r"^\s*>\s?", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)、])\s+", re.MULTILINE)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$", re.MULTILINE)
_HR = re.compile(r"^\s*(?:[-*_]\s*){3,}$", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*{1,3}|_{2,3}|~~)(?=\S)(.+?)(?<=\S)\1")
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\ufe0f\u200d\u20e3\U000e0000-\U000e007f]")
_SPACES = re.compile(r"[ \t]+")

_NUM = r"(\d+(?:\.\d+)?)"
# (pattern, replacement): applied in order, after the Markdown is gone. Units only right
# after a number, so words and code names are left alone.
RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})"), r"\1年\2月\3日"),
    (re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})(?![\d:])"), r"\1点\2分"),
    (re.compile(_NUM + r"\s*[-~～]\s*" + _NUM + r"(?=\s*[%％a-zA-Z℃°元个次天]|$|\s|[，。、；])"),
     r"\1到\2"),
    (re.compile(r"(?<![\w.])-" + _NUM), r"负\1"),
    (re.compile(_NUM + r"\s*[%％]"), r"百分之\1"),
    (re.compile(r"[¥￥]\s*" + _NUM), r"\1元"),
    (re.compile(r"\$\s*" + _NUM), r"\1美元"),
    (re.compile(_NUM + r"\s*km/h\b", re.IGNORECASE), r"\1公里每小时"),
    (re.compile(_NUM + r"\s*(?:℃|°C)"), r"\1摄氏度"),
    (re.compile(_NUM + r"\s*km\b", re.IGNORECASE), r"\1公里"),
    (re.compile(_NUM + r"\s*kg\b", re.IGNORECASE), r"\1千克"),
    (re.compile(_NUM + r"\s*cm\b"), r"\1厘米"),
    (re.compile(_NUM + r"\s*mm\b"), r"\1毫米"),
    (re.compile(_NUM + r"\s*ml\b", re.IGNORECASE), r"\1毫升"),
    (re.compile(_NUM + r"\s*m\b(?!/)"), r"\1米"),
    (re.compile(_NUM + r"\s*g\b"), r"\1克"),
    (re.compile(_NUM + r"\s*(?:L|l)\b"), r"\1升"),
    (re.compile(_NUM + r"\s*(?:GB|G)\b"), r"\1G"),
    (re.compile(_NUM + r"\s*(?:h|hr)\b"), r"\1小时"),
    (re.compile(_NUM + r"\s*min\b"), r"\1分钟"),
    (re.compile(_NUM + r"\s*s\b"), r"\1秒"),
]
_SENTENCE = re.compile(r"[^。！？!?；;…\n]*(?:[。！？!?；;…]+|\n|$)")


def speakable(text: str) -> str:
    """``text`` without what cannot be spoken, with numbers and units spelled for speech."""
    text = _CODE_BLOCK.sub("\n", text)
    text = _IMAGE.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _URL.sub("", text)
    text = _EMAIL.sub("", text)
    text = _TABLE_RULE.sub("", text)
    text = _HR.sub("", text)
    text = _HEADING.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub("", text)
    text = _EMPHASIS.sub(r"\2", text)
    text = _EMOJI.sub("", text)
    text = "\n".join(_table_row(line) for line in text.split("\n"))
    for pattern, replacement in RULES:
        text = pattern.sub(replacement, text)
    text = _SPACES.sub(" ", text)
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(line for line in lines if line and not re.fullmatch(r"[。，、\s]+", line))
    return re.sub(r"([。！？])[。\s]*。", r"\1", text).strip()


def _table_row(line: str) -> str:
    if line.count("|") < 2:
        return line
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    return "，".join(c for c in cells if c) + "。"


def sentences(text: str) -> list[str]:
    """The speakable text cut into sentences (each non-empty, in order)."""
    out = []
    for match in _SENTENCE.finditer(speakable(text)):
        piece = match.group().strip()
        if piece and re.search(r"\w", piece):
            out.append(piece)
    return out
