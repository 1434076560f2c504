"""The moderator: local and WeChat checks, policies, background output checks, the audit trail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from mpchat.chat.moderation import Retracted
from mpchat.errors import ContentRejected
from mpchat.fakes.wechat import FakeWeChat
from mpchat.metrics import Metrics
from mpchat.providers.retry import RetryPolicy
from mpchat.safety.moderator import Moderator, OpenidCache
from mpchat.safety.segments import SegmentPolicy
from mpchat.safety.wordfilter import WordFilter
from mpchat.storage import audit
from mpchat.storage.engine import create_engine
from mpchat.wechat import ContentSecurity

KEY = audit.audit_key("test-secret")
AT_ONCE = SegmentPolicy(ages=(0.0,))  # every sentence end that arrives closes a segment



@pytest.fixture
async def wechat() -> AsyncIterator[FakeWeChat]:
    async with FakeWeChat(require_token=False) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _moderator(engine: Any, security: ContentSecurity | None = None, **kw: Any) -> Moderator:
    async def lookup(user_id: str) -> str | None:
        return f"openid-{user_id}"

    return Moderator(
        word_filter=WordFilter.from_words([("赌博", "gambling"), ("洗钱", "fraud")]),
        security=security,
        openids=OpenidCache(lookup) if security is not None else None,
        audit=audit.AuditWriter(engine),
        audit_key=KEY,
        metrics=Metrics(),
        **kw,
    )


def _security(wechat: FakeWeChat, http: aiohttp.ClientSession) -> ContentSecurity:
    return ContentSecurity(http, credential_free=True, base_url=wechat.base_url,
                           backoff=RetryPolicy(attempts=1))


async def _rows(mod: Moderator, engine: Any, **filters: Any) -> list[audit.AuditRow]:
    await mod.flush_audit()
    rows, _ = await audit.list_events(engine, **filters)
    return rows


async def test_openid_cache_asks_once_and_evicts_the_oldest():
    asked: list[str] = []

    async def lookup(user_id: str) -> str | None:
        asked.append(user_id)
        return None if user_id == "ghost" else "o-" + user_id

    cache = OpenidCache(lookup, size=2)
    assert await cache.get("a") == "o-a"
    assert await cache.get("a") == "o-a"
    await cache.get("b")
    await cache.get("c")  # evicts "a"
    await cache.get("a")
    assert await cache.get("ghost") is None
    assert asked == ["a", "b", "c", "a", "ghost"]


async def test_local_input_hit_rejects_and_is_audited_without_text(engine):
    mod = _moderator(engine)
    mod.check_input_locally("你好", user_id="u1")
    with pytest.raises(ContentRejected):
        mod.check_input_locally("一起来赌 博吧", user_id="u1")
    rows = await _rows(mod, engine)
    assert [(r.check, r.stage, r.verdict, r.rule) for r in rows] == [
        ("local", "input", "hit", "gambling")]
    assert rows[0].user_hash == audit.hash_user(KEY, "u1") != "u1"
    assert rows[0].excerpt is None
    await mod.aclose()


async def test_audit_text_keeps_an_excerpt(engine):
    mod = _moderator(engine, audit_text=True)
    with pytest.raises(ContentRejected):
        mod.check_input_locally("他说要洗钱", user_id="u1")
    [row] = await _rows(mod, engine)
    assert row.excerpt is not None and "洗钱" in row.excerpt
    await mod.aclose()


async def test_output_word_split_over_pieces_is_never_released(engine):
    mod = _moderator(engine)
    check = mod.output(user_id="u1", message_id="m1")
    sent = check.feed("好的，赌")
    with pytest.raises(Retracted):
        sent += check.feed("博网站")
    assert "赌" not in sent
    [row] = await _rows(mod, engine)
    assert (row.stage, row.verdict, row.message_id) == ("output", "hit", "m1")
    await check.aclose()
    await mod.aclose()


async def test_wechat_input_verdicts_and_review_policy(engine, wechat, http):
    allow = _moderator(engine, _security(wechat, http), review_policy="allow")
    block = _moderator(engine, _security(wechat, http), review_policy="block")
    await allow.check_input("hello", user_id="u1")
    await allow.check_input("a review-word here", user_id="u1")
    with pytest.raises(ContentRejected):
        await block.check_input("a review-word here", user_id="u1")
    with pytest.raises(ContentRejected):
        await allow.check_input("a risky-word here", user_id="u1")
    assert wechat.stats.sec_checks == 4
    await block.flush_audit()
    rows = await _rows(allow, engine, check="wechat")
    assert sorted(r.verdict for r in rows) == ["pass", "review", "review", "risky"]
    assert {r.rule for r in rows if r.verdict == "risky"} == {"20001"}
    await allow.aclose()
    await block.aclose()


@pytest.mark.parametrize(("policy", "passes"), [("open", True), ("closed", False)])
async def test_wechat_unavailable_follows_the_policy(engine, wechat, http, policy, passes):
    mod = _moderator(engine, _security(wechat, http), unavailable_policy=policy)
    wechat.fail("msg_sec_check", times=1, errcode=40003)  # not retried: unavailable at once
    if passes:
        await mod.check_input("hello", user_id="u1")
    else:
        with pytest.raises(ContentRejected, match="暂时不可用"):
            await mod.check_input("hello", user_id="u1")
    [row] = await _rows(mod, engine)
    assert (row.check, row.verdict) == ("wechat", "unavailable")
    await mod.aclose()


async def test_wechat_output_segment_fails_in_the_background(engine, wechat, http):
    mod = _moderator(engine, _security(wechat, http), segment_policy=AT_ONCE)
    check = mod.output(user_id="u1", message_id="m1")
    assert check.feed("这是 risky-word 的一句话。") != ""
    async with asyncio.timeout(5):
        while True:
            try:
                check.verdict()
            except Retracted as exc:
                assert exc.reason == "wechat:risky"
                break
            await asyncio.sleep(0.01)  # polling the background check, not a stand-in for sync
    with pytest.raises(Retracted):
        check.feed("后面的话")
    await check.aclose()
    await mod.aclose()


async def test_finish_checks_the_last_segment_with_the_answer_before_it(engine, wechat, http):
    first_at_once = SegmentPolicy(ages=(0.0, 60.0))
    mod = _moderator(engine, _security(wechat, http), segment_policy=first_at_once)
    check = mod.output(user_id="u1", message_id="m1")
    check.feed("第一句话没有问题。")
    check.feed("第二句")
    assert await check.finish() == ""
    # The first sentence, then the rest seen with it: the whole answer, and no third call.
    assert sorted(wechat.stats.contents) == sorted(
        ["第一句话没有问题。", "第一句话没有问题。第二句"])
    rows = await _rows(mod, engine, stage="output")
    assert [r.verdict for r in rows] == ["pass"] * 2
    assert {r.message_id for r in rows} == {"m1"}

    failing = mod.output(user_id="u1", message_id="m2")
    failing.feed("没问题的开头。")
    failing.feed("结尾是 risky-word")
    with pytest.raises(Retracted):
        await failing.finish()
    await mod.aclose()


async def test_aclose_cancels_pending_checks(engine, wechat, http):
    mod = _moderator(engine, _security(wechat, http), segment_policy=AT_ONCE)
    wechat.hang("msg_sec_check", times=5)
    check = mod.output(user_id="u1", message_id="m1")
    check.feed("一句。")
    await _eventually(lambda: wechat.stats.in_flight["msg_sec_check"] == 1)
    async with asyncio.timeout(5):
        await check.aclose()
    # The request to WeChat was dropped, not left hanging.
    await _eventually(lambda: wechat.stats.in_flight["msg_sec_check"] == 0)
    await mod.aclose()


async def _eventually(condition: Callable[[], bool]) -> None:
    """Poll a condition another task makes true (there is no event to wait on)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 5 s")


async def test_audit_listing_filters_and_pages(engine):
    events = [
        audit.AuditEvent(check="local", stage="input", verdict="hit", user_hash="h1", rule="r"),
        audit.AuditEvent(check="wechat", stage="input", verdict="pass", user_hash="h1"),
        audit.AuditEvent(check="wechat", stage="output", verdict="risky", user_hash="h2",
                         message_id="m", trace_id="t", rule="20001"),
    ]
    await audit.write_events(engine, events=events)
    rows, cursor = await audit.list_events(engine, limit=2)
    assert [r.verdict for r in rows] == ["risky", "pass"] and cursor is not None
    rest, end = await audit.list_events(engine, before=cursor, limit=2)
    assert [r.verdict for r in rest] == ["hit"] and end is None
    only = await audit.list_events(engine, check="wechat", user_hash="h1")
    assert [r.verdict for r in only[0]] == ["pass"]
    since = await audit.list_events(engine, since=rows[0].created_at)
    assert rows[0].seq in [r.seq for r in since[0]]


async def test_audit_failure_never_raises_into_the_caller(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'no-schema.db'}")
    writer = audit.AuditWriter(engine)
    writer.record(audit.AuditEvent(check="local", stage="input", verdict="hit", user_hash="h"))
    await writer.flush()
    assert writer.dropped == 1 and writer.written == 0
    await writer.aclose()
    await engine.dispose()


async def test_the_audit_row_names_the_rule_that_decided(engine, tmp_path):
    words, allow = tmp_path / "ops.txt", tmp_path / "innocent.txt"
    words.write_text("# fraud\nscam\tfraud\n洗钱\tfraud\n", encoding="utf-8")
    allow.write_text("反洗钱\n", encoding="utf-8")
    for audit_text in (False, True):
        mod = Moderator(word_filter=WordFilter.from_files([words], allow=[allow]),
                        audit=audit.AuditWriter(engine), audit_key=KEY, audit_text=audit_text)
        mod.check_input_locally("学习反洗钱的知识", user_id="u1")  # allow-listed
        mod.check_input_locally("a scampi recipe", user_id="u1")  # inside a longer word
        with pytest.raises(ContentRejected):
            mod.check_input_locally("教你洗 錢", user_id="u1")
        await mod.aclose()
    plain, private = await _rows(mod, engine)
    assert (private.rule, private.excerpt) == ("fraud", None)
    # The entry that matched, by file and line, and where: not the user's words.
    assert private.detail == {"list": "ops.txt:3", "span": [2, 5]}
    # Where the operator keeps text: the term, and the span as the filter saw it.
    assert plain.detail == {"list": "ops.txt:3", "span": [2, 5], "term": "洗钱",
                            "normalised": "洗 钱"}


async def test_wechat_rows_say_what_wechat_said_and_which_policy_decided(engine, wechat, http):
    mod = _moderator(engine, _security(wechat, http), review_policy="block")
    with pytest.raises(ContentRejected):
        await mod.check_input("a review-word here", user_id="u1")
    wechat.fail("msg_sec_check", times=1, errcode=40003)
    with pytest.raises(ContentRejected):
        await mod.check_input("hello", user_id="u1")
    unavailable, review = await _rows(mod, engine)
    assert review.detail == {"suggest": "review", "label": 20006, "policy": "review:block",
                             "refused": True}
    assert review.trace_id and review.rule == "20006"
    assert unavailable.detail == {"policy": "unavailable:closed", "refused": True}
    await mod.aclose()


async def test_forget_user_anonymises_their_rows_only(engine):
    mod = _moderator(engine, audit_text=True)
    for user in ("u1", "u2"):
        with pytest.raises(ContentRejected):
            mod.check_input_locally("他说要洗钱", user_id=user)
    assert await mod.forget_user("u1") == 1
    rows = await _rows(mod, engine)
    gone = [r for r in rows if r.user_hash == audit.ANONYMISED]
    kept = [r for r in rows if r.user_hash == audit.hash_user(KEY, "u2")]
    assert len(gone) == 1 and len(kept) == 1
    assert (gone[0].excerpt, gone[0].rule, gone[0].detail) == (None, "fraud", kept[0].detail)
    assert kept[0].excerpt is not None
    await mod.aclose()


async def test_old_audit_rows_are_purged(engine):
    old = datetime.now(UTC) - timedelta(days=200)
    await audit.write_events(engine, events=[
        audit.AuditEvent(check="local", stage="input", verdict="hit", user_hash="h",
                         created_at=old),
        audit.AuditEvent(check="local", stage="input", verdict="hit", user_hash="h"),
    ])
    assert await audit.purge_events(engine, days=180, batch=1) == 1
    rows, _ = await audit.list_events(engine)
    assert len(rows) == 1 and rows[0].created_at > old
    assert await audit.purge_events(engine, days=180) == 0
