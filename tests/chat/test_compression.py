"""Compression with a cost bound (issue 12, item 1): a long conversation under a small budget.

The bound asserted here is the one docs/chat.md states: with hysteresis (a summary leaves at
most half the history budget verbatim), turns of at most T tokens, a history budget H and
summaries of at most S tokens, two summaries are at least ``floor((H/2 - S) / T) + 1`` turns
apart, and none is made on the way to an answer's first delta.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from mpchat.chat.context import history_budget, summary_block
from mpchat.chat.summarize import PROMPT as SUMMARY_PROMPT
from mpchat.estimate import estimate_tokens
from mpchat.fakes.upstream import FakeUpstream
from tests.utils import running_app

TURNS = 60
BUDGET = 600
FACT = "我叫王小明，订单号是 A20261130，收货地址在杭州西湖区。"
PAD = "请帮我看看这个问题应该怎么处理谢谢"  # 17 CJK characters


def _question(i: int) -> str:
    return FACT if i == 1 else f"第{i:02d}轮：{PAD}"


def _answer(i: int) -> str:
    return f"回答{i:02d}：好的，我们已经记录下来，会尽快处理。"


def _summary(k: int) -> str:
    return f"摘要{k:02d}：用户王小明，订单号 A20261130，地址杭州西湖区。"


def _is_summary(request: list[dict[str, Any]]) -> bool:
    return request[0]["content"] == SUMMARY_PROMPT


def _settings(settings_factory: Any, fake: FakeUpstream, **extra: Any) -> Any:
    return settings_factory(upstream_base_url=fake.base_url, upstream_api_key="sk-test-key-123456",
                            upstream_model="fake-model", context_token_budget=BUDGET,
                            system_prompt="S", **extra)


async def test_a_long_conversation_stays_in_budget_with_few_incremental_summaries(
    settings_factory, fake_upstream
):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        summarizer = app.services.chat.summarizer
        assert summarizer is not None
        token = await app.login("long")
        conv: str | None = None
        made = 0  # summaries scripted so far
        summary_turns: list[int] = []
        for i in range(1, TURNS + 1):
            fake_upstream.script = [{"text": [_answer(i)]}, {"text": [_summary(made + 1)]}]
            before = len(fake_upstream.stats.received)
            body: dict[str, Any] = {"content": _question(i)}
            if conv:
                body["conversation_id"] = conv
            status, events = await app.chat_events(token, body)
            assert status == 200 and events[-1]["type"] == "done", events[-1]
            conv = events[0]["conversation_id"]
            await summarizer.wait_idle()
            new = fake_upstream.stats.received[before:]
            assert not _is_summary(new[0])  # the answer never waits for a summary
            if len(new) > 1:
                assert len(new) == 2 and _is_summary(new[1])
                made += 1
                summary_turns.append(i)

        requests = fake_upstream.stats.received
        chats = [r for r in requests if not _is_summary(r)]
        summaries = [r for r in requests if _is_summary(r)]
        assert len(chats) == TURNS and len(summaries) == made == summarizer.calls

        # 1. Every context fits the budget, ends with its question, and its turns are the
        # newest ones, in order, after the summary in the system prompt.
        transcript = [x for i in range(1, TURNS + 1) for x in (_question(i), _answer(i))]
        for n, sent in enumerate(chats, 1):
            assert sum(estimate_tokens(m["content"]) for m in sent) <= BUDGET
            body = [m["content"] for m in sent[1:]]
            assert body[-1] == _question(n)
            kept = body[:-1]
            assert kept == transcript[2 * (n - 1) - len(kept):2 * (n - 1)]
            assert [m["role"] for m in sent[1:]] == ["user", "assistant"] * (len(kept) // 2) + [
                "user"]

        # 2. Cost bound: the first summary only once turns no longer fit; then at most one
        # every few turns (the bound docs/chat.md derives), against one per turn before.
        turn_tokens = max(estimate_tokens(_question(i)) + estimate_tokens(_answer(i))
                          for i in range(1, TURNS + 1))
        history = min(history_budget(BUDGET, system_prompt="S",
                                     question_tokens=estimate_tokens(_question(i)))
                      for i in range(1, TURNS + 1))
        summary_cost = max(estimate_tokens(summary_block(_summary(k), omitted=True))
                           for k in range(1, made + 1))
        gap = int((history / 2 - summary_cost) // turn_tokens) + 1
        assert gap >= 5, (history, summary_cost, turn_tokens)
        assert all(b - a >= gap for a, b in pairwise(summary_turns))
        assert 1 <= made <= (TURNS - summary_turns[0]) // gap + 1
        # Greedy filling (before) summarised on every turn after the first omission.
        assert made <= (TURNS - summary_turns[0]) // 5 + 1, summary_turns

        # 3. Incremental: the fact of turn 1 reaches the first summarizer's input; later ones
        # get the previous summary and only the turns after it.
        first_input = summaries[0][-1]["content"]
        assert f"user: {FACT}" in first_input and "已有摘要" not in first_input
        for k, request in enumerate(summaries[1:], 2):
            text = request[-1]["content"]
            assert text.startswith(f"已有摘要：{_summary(k - 1)}")
            assert FACT not in text
        # The prompt asks to keep what the user stated about themselves.
        assert "订单号" in SUMMARY_PROMPT and "姓名" in SUMMARY_PROMPT

        # 4. Turn 60's context carries the newest summary.
        assert f"此前对话的摘要：{_summary(made)}" in chats[-1][0]["content"]

        # 5. The messages API marks the summarised messages: the oldest ones.
        headers = {"Authorization": f"Bearer {token}"}
        async with app.http.get(f"{app.base_url}/api/v1/conversations/{conv}/messages",
                                params={"limit": "200"}, headers=headers) as r:
            items = (await r.json())["items"]
        flags = [m["summarized"] for m in items]
        assert len(items) == 2 * TURNS and flags[0] and not flags[-1]
        assert flags == sorted(flags, reverse=True)  # a run of summarised, then the rest
        assert items[0]["content"] == FACT  # still stored and listed in full

        # 6. Deleting the conversation deletes its summary with it.
        async with app.http.delete(f"{app.base_url}/api/v1/conversations/{conv}",
                                   headers=headers) as r:
            assert r.status == 204
        from sqlalchemy import func, select

        from mpchat.storage.tables import conversations
        async with app.services.engine.connect() as db:
            left = (await db.execute(select(func.count()).select_from(conversations)
                                     .where(conversations.c.summary.is_not(None)))).scalar()
        assert left == 0


async def test_the_summary_model_is_configurable(settings_factory, fake_upstream, tmp_path):
    config = tmp_path / "mpchat.toml"
    config.write_text(
        f'[[providers]]\nname = "p"\nbase_url = "{fake_upstream.base_url}"\n'
        'api_key = "sk-test-key-123456"\nmodels = ["fake-model", "fake-mini"]\n'
    )
    settings = settings_factory(config=config, context_token_budget=80, system_prompt="S",
                                summary_model="fake-mini")
    async with running_app(settings) as app:
        summarizer = app.services.chat.summarizer
        assert summarizer is not None and summarizer.model == "fake-mini"
        token = await app.login("mini")
        conv = None
        for i in range(4):
            fake_upstream.script = [{"text": [f"回答{i}" * 5]}, {"text": ["摘要"]}]
            body: dict[str, Any] = {"content": f"问题{i}" * 5}
            if conv:
                body["conversation_id"] = conv
            _, events = await app.chat_events(token, body)
            conv = events[0]["conversation_id"]
            await summarizer.wait_idle()
        models = [(b["messages"][0]["content"] == SUMMARY_PROMPT, b.get("model"))
                  for b in fake_upstream.stats.bodies]
        assert (True, "fake-mini") in models
        assert all(model == "fake-model" for summary, model in models if not summary)
