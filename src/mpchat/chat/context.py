"""The messages sent to the model: what fits the context budget, and in what order.

Storage reads the rows (`mpchat.storage.messages.begin_turn`: the conversation's summary
and its later messages, newest first); this module decides what the model sees:

* `history_budget` and `fit_context`: the budget (``MPCHAT_CONTEXT_TOKEN_BUDGET``, in
  estimated tokens) is spent on the system prompt, the new question and the summary
  first, then on the earlier messages from the newest back, up to the first that does
  not fit. Older ones, and unreadable ones, are omitted; the summarizer later covers
  what was omitted.
* `build_messages`: the system prompt (with the summary, or a note that earlier turns
  were left out), the kept turns in chronological order, then the new message.

The field report's sample read the newest rows in descending order, never reversed
them and never appended the new message; here history is always put back in order and
always ends with the new message.

Roles strictly alternate: a question whose answer is not in context (still being
produced, retracted, or lost with a crashed instance) is left out, and so is an answer
whose question fell outside the budget, so no question is ever sent twice in a row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from mpchat.estimate import estimate_tokens
from mpchat.storage.messages import HistoryTurn

__all__ = ["Context", "alternating", "build_messages", "fit_context", "history_budget"]

OMITTED_NOTE = "（更早的对话内容因长度限制未包含在内。）"


class EarlierMessage(Protocol):
    """A stored message that may be sent again (a row of `Turn.earlier`)."""

    @property
    def seq(self) -> int: ...
    @property
    def role(self) -> str: ...
    @property
    def tokens(self) -> int: ...


M = TypeVar("M", bound=EarlierMessage)


@dataclass(frozen=True, slots=True)
class Context:
    """What of the conversation goes to the model with the new question."""

    history: list[HistoryTurn]  # chronological
    summary: str | None = None  # of the turns before the history
    omitted: int = 0  # earlier messages left out (over the budget, or unreadable)
    oldest_kept_seq: int | None = None  # where a summary of the omitted ones would end


def history_budget(budget: int, *, system_prompt: str, question_tokens: int) -> int:
    """What the system prompt and the new question leave of the whole context's ``budget``
    for the summary and the earlier messages."""
    return max(budget - question_tokens - estimate_tokens(system_prompt), 0)


def fit_context(
    earlier: Sequence[M],
    *,
    text: Callable[[M], str | None],
    summary: str | None,
    budget: int,
) -> Context:
    """The summary, then the newest of ``earlier`` (newest first) that fit in ``budget``
    (`history_budget`); a message's ``text`` (None: unreadable) is read only once it fits."""
    left = max(budget - (estimate_tokens(summary) if summary else 0), 0)
    newest_first: list[HistoryTurn] = []
    oldest: int | None = None
    for message in earlier:
        if message.tokens > left:
            break
        content = text(message)
        if content is None:
            continue  # an unreadable row is left out of context, not fatal to the chat
        left -= message.tokens
        oldest = message.seq
        newest_first.append(HistoryTurn(message.role, content))
    newest_first.reverse()  # chronological: oldest of the kept turns first
    return Context(newest_first, summary, len(earlier) - len(newest_first), oldest)


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
