"""The messages sent to the model: system prompt, earlier turns in order, the new message.

The field report's sample read the newest rows in descending order, never reversed
them and never appended the new message; `build_messages` takes history that storage
has already put in chronological order and always ends with the new message.

Roles strictly alternate: a question whose answer is not in context (still being
produced, retracted, or lost with a crashed instance) is left out, and so is an answer
whose question fell outside the budget, so no question is ever sent twice in a row.
"""

from __future__ import annotations

from collections.abc import Sequence

from mpchat.storage.messages import HistoryTurn

__all__ = ["alternating", "build_messages"]

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
    messages.extend({"role": turn.role, "content": turn.content}
                    for turn in alternating(history))
    messages.append({"role": "user", "content": new_message})
    return messages


def alternating(history: Sequence[HistoryTurn]) -> list[HistoryTurn]:
    """Question-answer pairs only, in order: what a chat model expects before a question."""
    kept: list[HistoryTurn] = []
    for turn in history:
        if turn.role == "user":
            if kept and kept[-1].role == "user":
                kept.pop()  # a question without its answer
            kept.append(turn)
        elif kept and kept[-1].role == "user":
            kept.append(turn)
        # else: an answer without its question (cut by the budget): left out
    if kept and kept[-1].role == "user":
        kept.pop()
    return kept
