"""The messages sent to the model: system prompt, earlier turns in order, the new message.

The field report's sample read the newest rows in descending order, never reversed
them and never appended the new message; `build_messages` takes history that storage
has already put in chronological order and always ends with the new message.
"""

from __future__ import annotations

from collections.abc import Sequence

from mpchat.storage.messages import HistoryTurn

__all__ = ["build_messages"]

OMITTED_NOTE = "（更早的对话内容因长度限制未包含在内。）"


def build_messages(
    *,
    system_prompt: str,
    history: Sequence[HistoryTurn],
    new_message: str,
    summary: str | None = None,
    omitted: int = 0,
) -> list[dict[str, str]]:
    system = system_prompt
    if summary:
        system += f"\n\n此前对话的摘要：{summary}"
    elif omitted:
        system += f"\n\n{OMITTED_NOTE}"
    messages = [{"role": "system", "content": system}] if system else []
    messages.extend({"role": turn.role, "content": turn.content} for turn in history)
    messages.append({"role": "user", "content": new_message})
    return messages
