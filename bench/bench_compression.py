"""History compression: provider calls and tokens per turn over a long scripted conversation.

    .venv/bin/python bench/bench_compression.py                 # 100 turns, budget 1,000
    .venv/bin/python bench/bench_compression.py --turns 200 --budget 3000

mpchat (in process, SQLite in a temporary directory) talks to the fake provider; every turn
is a question of about 40 characters and an answer of about 120, both Chinese, and every
summary the fake returns is about 150 characters. The conversation runs twice: with the
hysteresis mpchat uses (a summary leaves half the budget verbatim, `SUMMARY_TARGET` 0.5) and
with the greedy policy it replaced (a summary of just what the turn left out: target 1.0).
Reported per policy: chat and summary calls, calls per turn, and estimated prompt tokens
(the chats' contexts and the summaries' inputs) per turn. Figures: docs/chat.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.utils: the app on loopback HTTP, as the tests run it

from mpchat.chat import context as context_policy  # noqa: E402
from mpchat.chat.summarize import PROMPT as SUMMARY_PROMPT  # noqa: E402
from mpchat.estimate import estimate_tokens  # noqa: E402
from mpchat.fakes.upstream import FakeUpstream  # noqa: E402
from mpchat.settings import Settings  # noqa: E402
from tests.utils import running_app  # noqa: E402

QUESTION = "我想咨询一下订单的物流情况，已经三天没有更新了，请问应该怎么办？第{i}次"
ANSWER = ("您好，很抱歉给您带来不便。物流信息三天未更新，可能是包裹在中转站集中分拣，"
          "也可能是快递公司系统延迟。建议您先在快递官网用运单号查询最新状态；如果仍无更新，"
          "我们可以帮您联系快递公司核实，并在二十四小时内给您回复。第{i}次")
SUMMARY = ("用户王小明，订单号 A20261130，咨询物流三天未更新的问题。助手已说明可能原因，"
           "建议先在快递官网查询，如仍无更新将联系快递公司核实并在二十四小时内回复。"
           "用户同意等待回复，期间多次追问进展。摘要第{k}版")


def _tokens(messages: list[dict[str, Any]]) -> int:
    return sum(estimate_tokens(m["content"]) for m in messages)


async def run(turns: int, budget: int, target: float) -> dict[str, float]:
    context_policy.SUMMARY_TARGET = target
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeUpstream() as fake:
            settings = Settings(_env_file=None, data_dir=Path(tmp),  # type: ignore[call-arg]
                                upstream_base_url=fake.base_url, upstream_api_key="sk-bench",
                                upstream_model="fake-model", context_token_budget=budget,
                                rate_limit="100000/minute", log_level="warning")
            async with running_app(settings) as app:
                summarizer = app.services.chat.summarizer
                token = await app.login("bench")
                conv = None
                made = 0
                for i in range(1, turns + 1):
                    fake.script = [{"text": [ANSWER.format(i=i)]},
                                   {"text": [SUMMARY.format(k=made + 1)]}]
                    body: dict[str, Any] = {"content": QUESTION.format(i=i)}
                    if conv:
                        body["conversation_id"] = conv
                    _, events = await app.chat_events(token, body)
                    conv = events[0]["conversation_id"]
                    await summarizer.wait_idle()
                    made = summarizer.calls
                requests = fake.stats.received
    chats = [r for r in requests if r[0]["content"] != SUMMARY_PROMPT]
    summaries = [r for r in requests if r[0]["content"] == SUMMARY_PROMPT]
    chat_tokens = sum(_tokens(r) for r in chats)
    summary_tokens = sum(_tokens(r) for r in summaries)
    return {
        "turns": turns, "chat calls": len(chats), "summary calls": len(summaries),
        "calls/turn": len(requests) / turns,
        "chat prompt tokens/turn": chat_tokens / turns,
        "summary input tokens/turn": summary_tokens / turns,
        "summary output tokens/turn": len(summaries) * estimate_tokens(SUMMARY) / turns,
        "prompt tokens/turn": (chat_tokens + summary_tokens) / turns,
        "largest context": max(_tokens(r) for r in chats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--budget", type=int, default=1000)
    args = parser.parse_args()
    results = {
        "hysteresis (0.5)": asyncio.run(run(args.turns, args.budget, 0.5)),
        "greedy (1.0)": asyncio.run(run(args.turns, args.budget, 1.0)),
    }
    names = list(results)
    print(f"| budget {args.budget} | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for key in results[names[0]]:
        cells = []
        for name in names:
            value = results[name][key]
            cells.append(f"{value:.2f}" if isinstance(value, float) else str(value))
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
