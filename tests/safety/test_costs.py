"""WeChat calls per answer (docs/safety.md's table), counted by the fake WeChat."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import aiohttp
import pytest

from mpchat.fakes.wechat import FakeWeChat
from mpchat.providers.retry import RetryPolicy
from mpchat.safety.moderator import Moderator, OpenidCache, OutputMode
from mpchat.safety.wordfilter import WordFilter
from mpchat.wechat import ContentSecurity
from mpchat.wechat.security import MAX_CONTENT_CHARS

_SENTENCES = ["今天我们来聊一聊这个问题，", "首先需要明确几个基本概念。", "其次，",
              "要考虑实际的使用场景和限制条件！", "最后给出一个简单的总结。",
              "希望这些内容对你有帮助，如果还有疑问可以继续问我。"]
PIECE = 3  # characters per provider delta (about two tokens of Chinese)


def answer_text(size: int) -> str:
    text = ""
    for sentence in itertools.cycle(_SENTENCES):
        text += sentence
        if len(text) >= size:
            return text[:size]
    raise AssertionError("unreachable")


class Clock:
    """The answer's time: moved by the test as the provider would take it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def wechat() -> AsyncIterator[FakeWeChat]:
    async with FakeWeChat(require_token=False) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def calls_per_answer(wechat: FakeWeChat, http: aiohttp.ClientSession, *,
                           mode: OutputMode, size: int, pace: float) -> int:
    """Calls for one turn: the question's check and an answer of ``size`` characters
    streamed at ``pace`` characters a second."""
    async def lookup(user_id: str) -> str:
        return "openid-" + user_id

    clock = Clock()
    security = ContentSecurity(http, credential_free=True, base_url=wechat.base_url,
                               backoff=RetryPolicy(attempts=1))
    mod = Moderator(word_filter=WordFilter.from_words(["赌博"]), audit=None, audit_key=b"k",
                    security=security, openids=OpenidCache(lookup), output_mode=mode,
                    clock=clock)
    wechat.reset()
    await mod.check_input("请介绍一下这个问题", user_id="u1")
    check = mod.output(user_id="u1", message_id="m1")
    text = answer_text(size)
    shown = ""
    for start in range(0, size, PIECE):
        shown += check.feed(text[start:start + PIECE])
        clock.now += PIECE / pace
    shown += await check.finish()
    await check.aclose()
    await mod.aclose()
    assert shown == text
    assert all(len(c) <= MAX_CONTENT_CHARS for c in wechat.stats.contents)
    return wechat.stats.sec_checks


# (mode, characters, characters a second) -> calls, the question's check included.
TABLE = {
    ("stream", 40, 40): 2,
    ("stream", 300, 40): 2,
    ("stream", 2200, 40): 4,
    ("stream", 2200, 100): 3,
    ("stream", 2200, 20): 7,
    ("strict", 40, 40): 3,
    ("strict", 300, 40): 6,
    ("strict", 2200, 40): 9,
    ("strict", 2200, 100): 7,
}


@pytest.mark.parametrize(("mode", "size", "pace"), list(TABLE))
async def test_calls_per_answer(wechat: FakeWeChat, http: aiohttp.ClientSession,
                                mode: OutputMode, size: int, pace: float) -> None:
    assert await calls_per_answer(wechat, http, mode=mode, size=size, pace=pace) == \
        TABLE[(mode, size, pace)]


async def test_the_targets_of_the_default_mode(wechat: FakeWeChat,
                                               http: aiohttp.ClientSession) -> None:
    """A typical answer costs two calls with its question; a long one at most four."""
    assert await calls_per_answer(wechat, http, mode="stream", size=300, pace=40) == 2
    assert await calls_per_answer(wechat, http, mode="stream", size=2200, pace=40) <= 4
    # The last check saw the whole answer (it fits one call): no second whole-answer check.
    assert wechat.stats.contents[-1] == answer_text(2200)
