"""Token estimates for the context budget, without a tokenizer download.

Exact tokenizers (tiktoken and friends) fetch their vocabularies from the internet at
run time and differ per provider; the budget only needs a cautious estimate. CJK
characters cost about one token each in current tokenizers, other text about one
token per four characters, and each message carries a few tokens of framing.
"""

from __future__ import annotations

import re

__all__ = ["MESSAGE_OVERHEAD", "estimate_tokens"]

MESSAGE_OVERHEAD = 4
_WIDE = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f]")


def estimate_tokens(text: str) -> int:
    """Estimated tokens of one message, framing included."""
    wide = len(_WIDE.findall(text))
    return MESSAGE_OVERHEAD + wide + (len(text) - wide + 3) // 4
