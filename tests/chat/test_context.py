"""The context policy alone: what fits the budget, what is omitted, where the summary goes."""

from __future__ import annotations

from dataclasses import dataclass

from mpchat.chat.context import (
    OMITTED_NOTE,
    build_messages,
    fit_context,
    history_budget,
    summary_block,
)
from mpchat.estimate import estimate_tokens
from mpchat.storage.messages import HistoryTurn


@dataclass
class Row:
    """A stored message as `begin_turn` returns it; records whether its text was read."""

    seq: int
    role: str
    tokens: int
    body: str | None  # None: unreadable
    reads: int = 0


S = "s"  # a summary, so that the budget tests need not pay for the note of omitted turns
SC = estimate_tokens(summary_block(S, omitted=True))
NOTE = estimate_tokens(OMITTED_NOTE)


def text(row: Row) -> str | None:
    row.reads += 1
    return row.body


def _rows(*spec: tuple[str, int, str | None]) -> list[Row]:
    """Oldest first in ``spec``; returned newest first, as storage reads them."""
    rows = [Row(seq, role, tokens, body) for seq, (role, tokens, body) in enumerate(spec, 1)]
    return rows[::-1]


def test_the_prompt_and_the_question_come_out_of_the_budget_first():
    assert history_budget(100, system_prompt="", question_tokens=10) == 100 - 10 - 4
    assert history_budget(10, system_prompt="long " * 50, question_tokens=10) == 0


def test_the_newest_messages_that_fit_are_kept_in_order():
    rows = _rows(("user", 10, "q1"), ("assistant", 5, "a1"), ("user", 10, "q2"),
                 ("assistant", 5, "a2"))
    context = fit_context(rows, text=text, summary=S, budget=SC + 19)
    assert context.history == [HistoryTurn("user", "q2"), HistoryTurn("assistant", "a2")]
    assert context.omitted == 2 and context.oldest_kept_seq == 3
    assert context.summary == S


def test_the_first_message_that_does_not_fit_ends_the_history():
    # a1 (5) would fit after q2 does not (10 > 9 left): nothing older is taken, so the
    # history never has a gap.
    rows = _rows(("user", 1, "q1"), ("assistant", 5, "a1"), ("user", 10, "q2"),
                 ("assistant", 5, "a2"))
    context = fit_context(rows, text=text, summary=S, budget=SC + 14)
    assert [t.content for t in context.history] == ["a2"]
    assert context.omitted == 3


def test_the_summary_is_paid_for_before_the_history():
    summary = "earlier they spoke of tea"
    rows = _rows(("user", 10, "q1"), ("assistant", 5, "a1"))
    cost = estimate_tokens(summary_block(summary, omitted=True))  # its wording included
    context = fit_context(rows, text=text, summary=summary, budget=cost + 5)
    assert [t.content for t in context.history] == ["a1"]
    assert context.summary == summary and context.omitted == 1
    nothing = fit_context(rows, text=text, summary=summary, budget=cost - 1)
    assert nothing.history == [] and nothing.omitted == 2 and nothing.oldest_kept_seq is None


def test_unreadable_messages_are_omitted_without_using_the_budget():
    rows = _rows(("user", 10, "q1"), ("assistant", 5, None), ("user", 10, "q2"))
    context = fit_context(rows, text=text, summary=S, budget=SC + 20)
    assert [t.content for t in context.history] == ["q1", "q2"]
    assert context.omitted == 1 and context.oldest_kept_seq == 1


def test_texts_are_read_only_for_messages_that_fit():
    rows = _rows(("user", 10, "q1"), ("assistant", 5, "a1"), ("user", 10, "q2"))
    fit_context(rows, text=text, summary=None, budget=15)
    assert [r.reads for r in rows] == [1, 1, 0]  # newest first: q1 was never decrypted


def test_the_summary_or_a_note_goes_in_the_system_prompt_and_the_question_last():
    history = [HistoryTurn("user", "q1"), HistoryTurn("assistant", "a1")]
    with_summary = build_messages(system_prompt="be kind", history=history,
                                  new_message="q2", summary="s", omitted=3)
    assert with_summary[0] == {"role": "system", "content": "be kind\n\n此前对话的摘要：s"}
    assert [m["content"] for m in with_summary[1:]] == ["q1", "a1", "q2"]
    noted = build_messages(system_prompt="be kind", history=[], new_message="q", omitted=1)
    assert noted[0]["content"] == f"be kind\n\n{OMITTED_NOTE}"
    plain = build_messages(system_prompt="", history=[], new_message="q")
    assert plain == [{"role": "user", "content": "q"}]


def test_roles_alternate_and_no_question_is_sent_twice_in_a_row():
    history = [HistoryTurn("assistant", "orphan answer"), HistoryTurn("user", "q1"),
               HistoryTurn("user", "q2"), HistoryTurn("assistant", "a2"),
               HistoryTurn("user", "q3 unanswered")]
    sent = build_messages(system_prompt="", history=history, new_message="q4")
    assert [m["content"] for m in sent] == ["q2", "a2", "q4"]


def test_the_note_that_turns_were_left_out_is_paid_for():
    assert NOTE < 30
    rows = _rows(("user", 30, "q1"), ("assistant", 30, "a1"), ("user", 30, "q2"),
                 ("assistant", 30, "a2"))
    # q2 + a2 (60) fit in 60, but then the note does not: the oldest kept goes first.
    squeezed = fit_context(rows, text=text, summary=None, budget=60)
    assert [t.content for t in squeezed.history] == ["a2"] and squeezed.omitted == 3
    room = fit_context(rows, text=text, summary=None, budget=60 + NOTE)
    assert [t.content for t in room.history] == ["q2", "a2"] and room.omitted == 2


def _turns(n: int, tokens: int = 10) -> list[Row]:
    spec = [(role, tokens, f"{role[0]}{i}") for i in range(1, n + 1)
            for role in ("user", "assistant")]
    return _rows(*spec)


def test_hysteresis_summarises_down_to_half_the_budget_at_a_question():
    rows = _turns(10)  # seqs 1..20, 10 tokens each, questions at odd seqs
    context = fit_context(rows, text=text, summary=None, budget=100 + NOTE)
    assert context.omitted == 10 and context.oldest_kept_seq == 11
    # Half the budget (after the note's room) keeps the newest 60 tokens at most, cut at a
    # question: seqs 15..20 stay verbatim, 1..14 go into the summary.
    assert context.summarize_before == 15


def test_no_summary_is_asked_while_everything_fits():
    context = fit_context(_turns(3), text=text, summary=None, budget=1000)
    assert context.omitted == 0 and context.summarize_before is None


def test_a_turn_larger_than_the_target_leaves_only_itself():
    rows = _rows(("user", 10, "q1"), ("assistant", 10, "a1"), ("user", 40, "q2"),
                 ("assistant", 40, "a2"))
    context = fit_context(rows, text=text, summary=S, budget=SC + 80)
    assert context.omitted == 2
    assert context.summarize_before == 3  # everything before the newest question
