"""Prompt profiles: what a chat request's ``profile`` selects.

A profile is a system prompt, a model (or alias), a temperature, a bound on the answer and a
context budget. Three are built in (`BUILTIN`: ``default``, ``customer_service``,
``voice``); the config file's ``[profiles.<name>]`` tables override their fields or add new
profiles, and whatever a profile leaves unset comes from ``default``, which comes from
``MPCHAT_SYSTEM_PROMPT``, ``MPCHAT_CONTEXT_TOKEN_BUDGET`` and ``MPCHAT_MAX_ANSWER_TOKENS``.
docs/chat.md ("Prompt profiles") says why each line of the shipped prompts is there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["BUILTIN", "CUSTOMER_SERVICE_PROMPT", "VOICE_PROMPT", "ChatProfile", "build_profiles"]

CUSTOMER_SERVICE_PROMPT = "\n".join([
    "你是在线客服助手，用简体中文礼貌、耐心地回答用户的问题。",
    "先弄清用户要解决什么问题；信息不足时，一次只追问一个最关键的信息，例如订单号。",
    "只根据对话中已有的信息回答；不确定的政策、价格和时效不要编造，请用户以官方渠道为准或转人工客服。",
    "用户提供的姓名、订单号、金额、地址等信息要原样复述，不要改动。",
    "先给结论，再给步骤；步骤不超过五条。",
    "不要承诺退款、赔偿等需要人工审核的结果，只说明如何申请。",
])

VOICE_PROMPT = "\n".join([
    "你是语音助手：用户对着手机说话，你的回答会被朗读出来。",
    "用户的话是语音识别的结果，可能有同音字、错别字或断句错误；请按最合理的意思理解，"
    "意思不明确时用一句话简短确认。",
    "用口语回答，句子简短，先说结论。",
    "不要使用 Markdown、列表、表格、代码、表情符号或网址；需要分步骤时说“第一”“第二”。",
    "数字、日期和单位用适合朗读的说法，例如“三点五公里”“下午两点”。",
    "回答一般不超过一百字；用户想了解更多时再展开。",
])


@dataclass(frozen=True, slots=True)
class ChatProfile:
    name: str
    system_prompt: str
    model: str | None = None  # a concrete model some route serves; None: the routes' own
    temperature: float | None = None  # None: the provider's default
    max_answer_tokens: int | None = None  # None: no bound (or the quota's)
    context_budget: int = 3000

    def params(self) -> dict[str, Any]:
        """What goes to the provider as it is, beyond the messages."""
        return {} if self.temperature is None else {"temperature": self.temperature}


# Fields a built-in sets beyond the default's; None: the default's own.
BUILTIN: dict[str, dict[str, Any]] = {
    "default": {},
    "customer_service": {"system_prompt": CUSTOMER_SERVICE_PROMPT, "temperature": 0.3},
    "voice": {"system_prompt": VOICE_PROMPT, "temperature": 0.5, "max_answer_tokens": 400},
}


def build_profiles(
    *,
    system_prompt: str,
    context_budget: int,
    max_answer_tokens: int | None,
    configured: Mapping[str, Mapping[str, Any]] | None = None,
    resolve: Callable[[str], str | None] | None = None,
) -> dict[str, ChatProfile]:
    """Every profile by name: the built-ins, then the config file's (``configured``: each
    profile's set fields), each over ``default``; ``resolve`` turns an alias into a model."""
    configured = configured or {}
    default = ChatProfile("default", system_prompt, max_answer_tokens=max_answer_tokens,
                          context_budget=context_budget)
    default = _apply(default, configured.get("default", {}), resolve)
    profiles = {"default": default}
    for name in [*BUILTIN, *configured]:
        if name in profiles:
            continue
        base = _apply(replace(default, name=name), BUILTIN.get(name, {}), None)
        profiles[name] = _apply(base, configured.get(name, {}), resolve)
    return profiles


def _apply(profile: ChatProfile, fields: Mapping[str, Any],
           resolve: Callable[[str], str | None] | None) -> ChatProfile:
    values = {k: v for k, v in fields.items() if v is not None}
    if "model" in values and resolve is not None:
        values["model"] = resolve(values["model"])
    return replace(profile, **values)
