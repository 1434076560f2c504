"""The messages sent to the model: what fits the context budget, and in what order.

Storage reads the rows (`mpchat.storage.messages.begin_turn`: the conversation's summary
and its later messages, newest first); this module decides what the model sees:

* `history_budget` and `fit_context`: the budget (``MPCHAT_CONTEXT_TOKEN_BUDGET``, in
  estimated tokens) is spent on the system prompt, the new question and the summary
  first, then on the earlier messages from the newest back, up to the first that does
  not fit. Older ones, and unreadable ones, are omitted; the summarizer later covers
  what was omitted. The summary's and the omission note's exact wording is paid for, so
  what is sent never exceeds the budget.
* Hysteresis (`Context.summarize_before`): when something was omitted, the summary is asked
  to cover everything but the newest turns that fit in ``SUMMARY_TARGET`` of the budget
  (half), not just what this turn left out, so the turns after it grow for several turns
  before the budget is passed again and another summary is made.
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

__all__ = [
    "SUMMARY_TARGET",
    "Context",
    "alternating",
    "build_messages",
    "fit_context",
    "history_budget",
    "summary_block",
]

OMITTED_NOTE = "（更早的对话内容因长度限制未包含在内。）"
SUMMARY_PREFIX = "此前对话的摘要："
# After a summary, the turns kept verbatim fill at most this share of the history budget.
SUMMARY_TARGET = 0.5


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
    # Where the next summary should end (exclusive): the oldest question among the newest
    # turns that fit in SUMMARY_TARGET of the budget; None when nothing was omitted.
    summarize_before: int | None = None


def summary_block(summary: str | None, *, omitted: bool) -> str:
    """What the system prompt gains: the summary, or a note that turns were left out."""
    if summary:
        return f"\n\n{SUMMARY_PREFIX}{summary}"
    return f"\n\n{OMITTED_NOTE}" if omitted else ""


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
    left = max(budget - (estimate_tokens(summary_block(summary, omitted=True))
                         if summary else 0), 0)
    kept: list[tuple[M, HistoryTurn]] = []  # newest first
    for message in earlier:
        if message.tokens > left:
            break
        content = text(message)
        if content is None:
            continue  # an unreadable row is left out of context, not fatal to the chat
        left -= message.tokens
        kept.append((message, HistoryTurn(message.role, content)))
    if len(kept) < len(earlier) and not summary:
        note = estimate_tokens(OMITTED_NOTE)
        while kept and left < note:  # the note that turns were left out is paid for too
            left += kept.pop()[0].tokens
    omitted = len(earlier) - len(kept)
    oldest = kept[-1][0].seq if kept else None
    history = [turn for _, turn in reversed(kept)]  # chronological: oldest kept first
    before = (_summary_end(earlier, _target(budget, summary)) or oldest) if omitted else None
    return Context(history, summary, omitted, oldest, before)


def _target(budget: int, summary: str | None) -> int:
    spent = estimate_tokens(summary_block(summary, omitted=True)) if summary else 0
    return int(max(budget - spent, 0) * SUMMARY_TARGET)


def _summary_end(earlier: Sequence[M], target: int) -> int | None:
    """The seq of the oldest question among the newest messages that fit in ``target``;
    failing that, the newest question (all older turns go into the summary)."""
    end: int | None = None
    for message in earlier:
        if message.tokens > target:
            break
        target -= message.tokens
        if message.role == "user":
            end = message.seq
    if end is not None:
        return end
    return next((m.seq for m in earlier if m.role == "user"), None)


def build_messages(
    *,
    system_prompt: str,
    history: Sequence[HistoryTurn],
    new_message: str,
    summary: str | None = None,
    omitted: int = 0,
) -> list[dict[str, str]]:
    system = system_prompt + summary_block(summary, omitted=bool(omitted))
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
