"""Strict output mode: nothing leaves before WeChat passed it, released in order, withheld
rather than retracted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mpchat.chat.moderation import Retracted, Withheld
from mpchat.safety.moderator import Moderator, OpenidCache
from mpchat.safety.segments import SegmentPolicy
from mpchat.safety.wordfilter import WordFilter
from mpchat.wechat.security import Verdict

EACH_DELTA = SegmentPolicy(ages=(0.0,))  # every delta is a segment of its own
PASS, RISKY = Verdict("pass", 100, "t-pass"), Verdict("risky", 20001, "t-risky")


class Judge:
    """Stands in for `ContentSecurity`: each check waits for the verdict the test hands out."""

    def __init__(self) -> None:
        self.asked: asyncio.Queue[tuple[str, asyncio.Future[Verdict]]] = asyncio.Queue()
        self.deferrable: list[bool] = []

    async def check(self, text: str, *, openid: str, scene: int,
                    deferrable: bool = False) -> Verdict:
        verdict: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self.deferrable.append(deferrable)
        await self.asked.put((text, verdict))
        return await verdict

    async def next(self) -> tuple[str, asyncio.Future[Verdict]]:
        async with asyncio.timeout(5):
            return await self.asked.get()


def _strict(judge: Judge, policy: SegmentPolicy = EACH_DELTA) -> Moderator:
    async def lookup(user_id: str) -> str:
        return "openid-" + user_id

    security: Any = judge
    return Moderator(word_filter=WordFilter.from_words([("赌博", "gambling")]), audit=None,
                     audit_key=b"k", security=security, openids=OpenidCache(lookup),
                     output_mode="strict", segment_policy=policy)


class Screen:
    """What the client sees: the text handed over by the check."""

    def __init__(self) -> None:
        self.shown: asyncio.Queue[str] = asyncio.Queue()
        self.text = ""

    def release(self, text: str) -> None:
        self.text += text
        self.shown.put_nowait(text)

    async def next(self) -> str:
        async with asyncio.timeout(5):
            return await self.shown.get()


async def test_segments_are_released_in_order_as_their_checks_pass() -> None:
    judge, screen = Judge(), Screen()
    check = _strict(judge).output(user_id="u1", message_id="m1")
    check.on_release(screen.release)
    assert check.feed("第一句。") == "" and check.feed("第二句。") == ""
    first, second = await judge.next(), await judge.next()
    assert (first[0], second[0]) == ("第一句。", "第二句。")
    assert judge.deferrable == [True, True]  # an answer's checks leave the reserve to input
    second[1].set_result(PASS)  # the later check passes first, yet it shows second
    first[1].set_result(PASS)
    assert await screen.next() == "第一句。" and await screen.next() == "第二句。"
    finishing = asyncio.create_task(check.finish())
    assert not finishing.done()
    await check.aclose()
    finishing.cancel()


async def test_a_risky_third_segment_withholds_it_and_everything_after_it() -> None:
    judge, screen = Judge(), Screen()
    check = _strict(judge).output(user_id="u1", message_id="m1")
    check.on_release(screen.release)
    for piece in ("一。", "二。", "三。"):
        check.feed(piece)
    for verdict in (PASS, PASS, RISKY):
        (await judge.next())[1].set_result(verdict)
    assert await screen.next() == "一。" and await screen.next() == "二。"
    with pytest.raises(Withheld) as refused:
        check.feed("四。")
    assert refused.value.reason == "wechat:risky"
    with pytest.raises(Withheld):
        await check.finish()
    assert screen.text == "一。二。"
    await check.conclude()  # an early end never retracts in strict mode
    await check.aclose()


async def test_a_local_hit_withholds_rather_than_retracts() -> None:
    judge, screen = Judge(), Screen()
    check = _strict(judge).output(user_id="u1", message_id="m1")
    check.on_release(screen.release)
    check.feed("好的。")
    (await judge.next())[1].set_result(PASS)
    assert await screen.next() == "好的。"
    with pytest.raises(Withheld) as refused:
        check.feed("来赌博吧")
    assert refused.value.reason == "local:gambling" and isinstance(refused.value, Retracted)
    assert screen.text == "好的。"
    await check.aclose()


async def test_without_a_callback_the_text_waits_for_the_next_call() -> None:
    judge = Judge()
    check = _strict(judge).output(user_id="u1", message_id="m1")
    assert check.feed("第一句。") == "" and check.feed("第二") == ""
    for _ in range(2):
        (await judge.next())[1].set_result(PASS)
    assert await check.finish() == "第一句。第二"


async def test_a_stalled_provider_does_not_hold_checked_text_back() -> None:
    """The latency bound holds between deltas: a timer cuts the segment that became due."""
    judge, screen = Judge(), Screen()
    check = _strict(judge, SegmentPolicy(ages=(0.0, 0.05))).output(user_id="u1",
                                                                   message_id="m1")
    check.on_release(screen.release)
    check.feed("第一句。")
    check.feed("第二句没有说完")  # then the provider says nothing more for a while
    (await judge.next())[1].set_result(PASS)
    text, verdict = await judge.next()  # sent by the timer: no feed came
    assert text == "第二句没有说完"
    verdict.set_result(PASS)
    assert await screen.next() == "第一句。" and await screen.next() == "第二句没有说完"
    await check.aclose()


async def test_an_early_end_drops_what_was_never_shown() -> None:
    judge, screen = Judge(), Screen()
    check = _strict(judge).output(user_id="u1", message_id="m1")
    check.on_release(screen.release)
    check.feed("一。")
    _, verdict = await judge.next()
    await check.conclude()  # the user stopped: the pending check is dropped, never shown
    assert verdict.cancelled() or not verdict.done()
    assert screen.text == ""


async def test_a_failure_waits_for_the_checks_before_it() -> None:
    """Checks run concurrently: the third may fail while the second is still out."""
    judge, screen = Judge(), Screen()
    check = _strict(judge).output(user_id="u1", message_id="m1")
    check.on_release(screen.release)
    for piece in ("一。", "二。", "三。"):
        check.feed(piece)
    first, second, third = await judge.next(), await judge.next(), await judge.next()
    first[1].set_result(PASS)
    third[1].set_result(RISKY)
    assert await screen.next() == "一。"
    check.feed("四。")  # no Withheld yet: the second segment may still be shown
    second[1].set_result(PASS)
    assert await screen.next() == "二。"
    with pytest.raises(Withheld):
        await check.finish()
    assert judge.asked.empty()  # "四。" came after a failure: never checked, quota kept
    assert screen.text == "一。二。"
    await check.aclose()


async def test_text_before_a_local_hit_is_still_checked_and_shown() -> None:
    judge, screen = Judge(), Screen()
    policy = SegmentPolicy(ages=(0.0, 60.0))  # the second segment would wait a minute
    check = _strict(judge, policy).output(user_id="u1", message_id="m1")
    check.on_release(screen.release)
    check.feed("好的。")
    check.feed("第二句没问题。然后")
    assert check.feed("赌博") == ""  # the hit: the text before it goes to WeChat at once
    for _ in range(2):
        (await judge.next())[1].set_result(PASS)
    assert await screen.next() == "好的。" and await screen.next() == "第二句没问题。然后"
    with pytest.raises(Withheld) as refused:
        check.verdict()
    assert refused.value.reason == "local:gambling"
    assert screen.text == "好的。第二句没问题。然后"
    await check.aclose()
