"""ContentSecurity: verdicts, chunking, token retry, backoff, policy, Cloud Run, rate limit."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from redis.asyncio import Redis

from mpchat.errors import ServiceUnavailable
from mpchat.fakes.wechat import FakeWeChat
from mpchat.wechat import AccessTokenProvider, AppCredentials, CallQuota, ContentSecurity
from mpchat.wechat.security import split_content
from tests.utils import wait_until
from tests.wechat.conftest import Clock, HangingRedis

OPENID = "o_test_user"


@pytest.fixture
async def tokens(http, fake: FakeWeChat, appid, secret, fast_backoff):
    provider = AccessTokenProvider(
        http, AppCredentials(appid, secret, fake.base_url), backoff=fast_backoff
    )
    yield provider
    await provider.aclose()


@pytest.fixture
def security(http, fake: FakeWeChat, tokens, fast_backoff):
    def make(**kw: object) -> ContentSecurity:
        options: dict[str, object] = {
            "tokens": tokens,
            "base_url": fake.base_url,
            "backoff": fast_backoff,
        }
        options.update(kw)
        return ContentSecurity(http, **options)  # type: ignore[arg-type]

    return make


@pytest.mark.parametrize(
    ("text", "suggest", "label"),
    [
        ("你好，今天天气不错", "pass", 100),
        ("this has a review-word in it", "review", 20006),
        ("这是违规内容", "risky", 20002),
        ("review-word and risky-word: the worst wins", "risky", 20001),
    ],
)
async def test_verdicts(security, text: str, suggest: str, label: int) -> None:
    verdict = await security().check(text, openid=OPENID, scene=2)
    assert (verdict.suggest, verdict.label) == (suggest, label)
    assert verdict.trace_id and not verdict.unavailable
    assert verdict.passed is (suggest == "pass")


async def test_empty_text_passes_without_a_call(security, fake: FakeWeChat) -> None:
    assert (await security().check("  \n", openid=OPENID, scene=1)).passed
    assert fake.stats.sec_checks == 0


async def test_long_content_is_checked_in_concurrent_pieces(security, fake: FakeWeChat) -> None:
    fake.latency["msg_sec_check"] = 0.1  # so the pieces overlap in time
    text = "正常的文字" * 1198 + "risky-word"  # 6,000 characters, the risk at the very end
    assert len(text) == 6000
    verdict = await security().check(text, openid=OPENID, scene=2)
    assert verdict.suggest == "risky"
    assert fake.stats.sec_checks == 3
    assert all(len(piece) <= 2500 for piece in fake.stats.contents)
    assert fake.stats.max_in_flight["msg_sec_check"] == 3


def test_pieces_overlap_so_a_word_on_a_boundary_is_seen_whole() -> None:
    text = "a" * 2490 + "risky-word" + "b" * 3000
    pieces = split_content(text)
    assert all(len(p) <= 2500 for p in pieces)
    assert any("risky-word" in p for p in pieces)
    assert "".join(p if i == 0 else p[20:] for i, p in enumerate(pieces)) == text


async def test_the_fake_refuses_over_long_content(http, fake: FakeWeChat, tokens) -> None:
    token = await tokens.get()
    url = f"{fake.base_url}/wxa/msg_sec_check"
    payload = {"content": "x" * 2501, "version": 2, "scene": 2, "openid": OPENID}
    async with http.post(url, params={"access_token": token}, json=payload) as response:
        body = await response.json(content_type=None)
    assert body["errcode"] == 47001


async def test_expired_token_is_invalidated_and_retried_once(
    security, fake: FakeWeChat, tokens
) -> None:
    old = await tokens.get()
    fake.expire_token(old)
    verdict = await security().check("hello", openid=OPENID, scene=2)
    assert verdict.passed
    assert fake.stats.sec_checks == 2
    assert fake.stats.stable_token_calls == 2
    assert fake.stats.force_refreshes == 0
    assert fake.stats.tokens_seen == [old, fake.current_token]


async def test_two_concurrent_checks_on_an_expired_token_cause_one_refresh(
    security, fake: FakeWeChat, tokens
) -> None:
    fake.latency["stable_token"] = 0.05
    old = await tokens.get()
    fake.expire_token(old)
    checker = security()
    verdicts = await asyncio.gather(
        checker.check("first", openid=OPENID, scene=2),
        checker.check("second", openid=OPENID, scene=2),
    )
    assert all(v.passed for v in verdicts)
    assert fake.stats.stable_token_calls == 2  # the first fetch, then exactly one refresh


async def test_token_rejected_twice_gives_up(security, fake: FakeWeChat) -> None:
    fake.fail("msg_sec_check", 2, errcode=40001)
    with pytest.raises(ServiceUnavailable):
        await security().check("hello", openid=OPENID, scene=2)
    assert fake.stats.sec_checks == 2


async def test_system_busy_is_retried_then_succeeds(security, fake: FakeWeChat) -> None:
    fake.fail("msg_sec_check", 2, errcode=-1)
    assert (await security().check("hello", openid=OPENID, scene=2)).passed
    assert fake.stats.sec_checks == 3


async def test_system_busy_retries_are_bounded(security, fake: FakeWeChat) -> None:
    fake.fail("msg_sec_check", 10, errcode=-1)
    with pytest.raises(ServiceUnavailable):
        await security().check("hello", openid=OPENID, scene=2)
    assert fake.stats.sec_checks == 3


async def test_other_errcodes_are_not_retried(security, fake: FakeWeChat, caplog) -> None:
    fake.fail("msg_sec_check", 1, errcode=61010)
    with pytest.raises(ServiceUnavailable):
        await security().check("hello", openid=OPENID, scene=2)
    assert fake.stats.sec_checks == 1
    assert "errcode=61010" in caplog.text


async def test_a_hung_call_times_out(security, fake: FakeWeChat) -> None:
    fake.hang("msg_sec_check", 5)
    checker = security(timeout=aiohttp.ClientTimeout(total=0.2))
    with pytest.raises(ServiceUnavailable):
        await checker.check("hello", openid=OPENID, scene=2)


@pytest.mark.parametrize(("policy", "suggest"), [("open", "pass"), ("closed", "risky")])
async def test_unreachable_with_a_policy(
    http, closed_url: str, fast_backoff, policy: str, suggest: str
) -> None:
    checker = ContentSecurity(
        http,
        credential_free=True,
        base_url=closed_url,
        backoff=fast_backoff,
        on_unavailable=policy,  # type: ignore[arg-type]
    )
    verdict = await checker.check("hello", openid=OPENID, scene=2)
    assert (verdict.suggest, verdict.label, verdict.unavailable) == (suggest, None, True)


async def test_unreachable_raises_by_default(http, closed_url: str, fast_backoff) -> None:
    checker = ContentSecurity(http, credential_free=True, base_url=closed_url, backoff=fast_backoff)
    with pytest.raises(ServiceUnavailable):
        await checker.check("hello", openid=OPENID, scene=2)


async def test_credential_free_mode_sends_no_token(http, fake: FakeWeChat) -> None:
    fake.require_token = False
    checker = ContentSecurity(http, credential_free=True, base_url=fake.base_url)
    assert (await checker.check("含有违规词", openid=OPENID, scene=3)).suggest == "risky"
    assert fake.stats.tokens_seen == [None]
    assert fake.stats.stable_token_calls == 0


def test_a_token_provider_is_required_unless_credential_free(http) -> None:
    with pytest.raises(ValueError):
        ContentSecurity(http)


async def test_quota_queues_instead_of_failing(security, fake: FakeWeChat) -> None:
    clock = Clock()
    started = clock.now
    checker = security(quota=CallQuota(limit=3, period=60, clock=clock, sleep=clock.sleep))
    verdicts = await asyncio.gather(
        *(checker.check(f"message {i}", openid=OPENID, scene=2) for i in range(7))
    )
    assert all(v.passed for v in verdicts)
    assert fake.stats.sec_checks == 7
    # 3 now, 3 when the first minute's calls leave the window, 1 after the second minute;
    # only the head of the queue waited, each time exactly until the oldest call left.
    assert clock.slept == [pytest.approx(60.001), pytest.approx(60.001)]
    assert clock.now - started == pytest.approx(120.002)


async def test_every_attempt_takes_a_slot(security, fake: FakeWeChat) -> None:
    clock = Clock()
    quota = CallQuota(limit=2, period=60, clock=clock, sleep=clock.sleep)
    fake.fail("msg_sec_check", 2, errcode=-1)
    assert (await security(quota=quota).check("hello", openid=OPENID, scene=2)).passed
    assert fake.stats.sec_checks == 3
    assert clock.slept == [pytest.approx(60.001)]  # the third attempt waited for a slot


async def test_input_checks_take_precedence_when_the_quota_is_tight(
    security, fake: FakeWeChat
) -> None:
    clock = Clock()
    release = asyncio.Event()

    async def held(seconds: float) -> None:  # a wait for the window that the test ends
        clock.slept.append(seconds)
        await release.wait()
        clock.now += seconds

    quota = CallQuota(limit=5, period=60, clock=clock, sleep=held, reserve=2)
    checker = security(quota=quota)
    for i in range(3):  # output checks fill the window up to its reserve
        await checker.check(f"answer {i}", openid=OPENID, scene=2, deferrable=True)
    waiting = asyncio.create_task(
        checker.check("answer 3", openid=OPENID, scene=2, deferrable=True))
    await wait_until(lambda: clock.slept != [], timeout=5)
    # Input checks still find the two reserved slots, although an output check queued first.
    for i in range(2):
        assert (await checker.check(f"question {i}", openid=OPENID, scene=2)).passed
    assert not waiting.done() and fake.stats.sec_checks == 5
    release.set()
    assert (await waiting).passed
    assert clock.slept == [pytest.approx(60.001)]


def test_the_reserve_is_below_the_limit() -> None:
    assert CallQuota(limit=4000)  # a fifth reserved by default
    with pytest.raises(ValueError):
        CallQuota(limit=3, reserve=3)


async def test_shared_quota_through_redis(
    security, fake: FakeWeChat, redis: Redis, redis_prefix: str
) -> None:
    # Two instances sharing one window in Redis, timed by the Redis server's clock.
    quotas = [CallQuota(redis=redis, prefix=f"{redis_prefix}:", limit=2, period=0.3)
              for _ in range(2)]
    first, second = (security(quota=q) for q in quotas)
    started = time.monotonic()
    verdicts = await asyncio.gather(
        *(
            c.check(f"message {i}", openid=OPENID, scene=2)
            for i, c in enumerate([first, second] * 3)
        )
    )
    elapsed = time.monotonic() - started
    assert all(v.passed for v in verdicts)
    assert fake.stats.sec_checks == 6
    assert elapsed >= 0.55  # 2 now, 2 after one period, 2 after two
    assert not any(q.degraded for q in quotas)
    assert await redis.exists(f"{redis_prefix}:rl:msg_sec_check")


async def test_a_hung_redis_does_not_slow_every_check(
    security, fake: FakeWeChat, hanging_redis: HangingRedis
) -> None:
    clock = Clock()
    changes: list[bool] = []
    quota = CallQuota(redis=hanging_redis.client, limit=100, period=60, clock=clock,
                      sleep=clock.sleep, on_degraded=changes.append)
    checker = security(quota=quota)
    assert (await checker.check("first", openid=OPENID, scene=2)).passed  # one timeout
    assert quota.degraded and changes == [True]
    asked = hanging_redis.bytes_received
    assert asked > 0
    # Within the probe interval the in-process window decides: Redis is not asked again.
    for i in range(5):
        assert (await checker.check(f"m{i}", openid=OPENID, scene=2)).passed
    assert hanging_redis.bytes_received == asked
    # After it, one check probes (and pays the timeout again); still degraded, still served.
    clock.now += 2.0
    assert (await checker.check("probe", openid=OPENID, scene=2)).passed
    assert hanging_redis.bytes_received > asked
    assert quota.degraded and changes == [True] and fake.stats.sec_checks == 7
    assert clock.slept == []


def test_credential_free_defaults_to_the_cloud_run_open_api(http, tokens) -> None:
    cloud_run = repr(ContentSecurity(http, credential_free=True))
    assert "'http://api.weixin.qq.com/wxa/msg_sec_check'" in cloud_run
    assert "credential_free" in cloud_run
    public = repr(ContentSecurity(http, tokens=tokens))
    assert "'https://api.weixin.qq.com/wxa/msg_sec_check'" in public
