"""The streaming guard: a listed word split across chunks is never sent, innocent text all is."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpchat.safety.output_guard import OutputGuard
from mpchat.safety.wordfilter import Hit, WordFilter

WORDS = [("赌博", "gambling"), ("网络赌场", "gambling"), ("洗钱", "fraud"), ("scam", "fraud")]


@pytest.fixture(scope="module")
def wf() -> WordFilter:
    return WordFilter.from_words(WORDS)


def run(wf: WordFilter, pieces: list[str]) -> tuple[str, Hit | None, list[str]]:
    """Stream the pieces; what was sent, the hit, and what was held after each piece."""
    guard = OutputGuard(wf)
    sent, held = [], []
    hit = None
    for piece in pieces:
        result = guard.feed(piece)
        sent.append(result.text)
        held.append(guard.held)
        if result.hit:
            hit = result.hit
            break
    else:
        result = guard.flush()
        sent.append(result.text)
        hit = result.hit
    return "".join(sent), hit, held


ANSWERS = [
    ("你好，我们一起去赌博吧", 8),
    ("你好，我们一起去赌 博吧", 8),
    ("你好，我们一起去賭\u200b\u200b博吧", 8),
    ("先说一句：网 络 赌 场 很危险", 5),
    ("Don't fall for this scam.", 20),
    ("洗\u200b，\u200b钱", 0),
]


@pytest.mark.parametrize(("answer", "start"), ANSWERS)
def test_a_word_split_in_two_is_never_sent(wf: WordFilter, answer: str, start: int) -> None:
    for cut in range(len(answer) + 1):
        sent, hit, _ = run(wf, [answer[:cut], answer[cut:]])
        assert hit is not None, cut
        assert hit.start == start
        assert answer[hit.start : hit.end] == answer[start : hit.end]
        # Nothing of the word went out: only what came before it.
        assert answer.startswith(sent)
        assert len(sent) <= start, (cut, sent)


@pytest.mark.parametrize(("answer", "start"), ANSWERS)
def test_a_word_split_in_three_is_never_sent(wf: WordFilter, answer: str, start: int) -> None:
    for a in range(len(answer) + 1):
        for b in range(a, len(answer) + 1):
            sent, hit, _ = run(wf, [answer[:a], answer[a:b], answer[b:]])
            assert hit is not None and hit.start == start
            assert len(sent) <= start


def test_one_character_at_a_time(wf: WordFilter) -> None:
    answer = "可以啊。我们一起去赌博吧"
    sent, hit, _ = run(wf, list(answer))
    assert hit == Hit("gambling", "赌博", 9, 11)
    assert sent == "可以啊。我们一起去"


INNOCENT = [
    "今天天气很好，我们去博物馆吧。",
    "他爱赌。博物馆开门了",  # a hit candidate that turns out innocent once 物 arrives
    "This is camping gear, and the pass camera works.",
    "赌气的时候不要洗衣服，钱包放好。" * 5,
    "网络很慢，赌一把？不，场面太乱。",
    "",
]


@pytest.mark.parametrize("answer", INNOCENT)
def test_innocent_text_passes_whole(wf: WordFilter, answer: str) -> None:
    assert wf.find(answer) == []
    for size in (1, 2, 3, 7, 20):
        pieces = [answer[i : i + size] for i in range(0, len(answer), size)]
        sent, hit, _ = run(wf, pieces)
        assert hit is None
        assert sent == answer


def test_innocent_text_is_released_promptly(wf: WordFilter) -> None:
    guard = OutputGuard(wf)
    assert guard.feed("今天天气很好").text == "今天天气很好"
    # "赌" could start 赌博: held until the next character says otherwise.
    assert guard.feed("，不赌").text == "，不"
    assert guard.feed("气").text == "赌气"
    assert guard.flush().text == ""


def test_flush_releases_the_held_tail(wf: WordFilter) -> None:
    guard = OutputGuard(wf)
    assert guard.feed("别去网络").text == "别去"
    assert guard.held == "网络"
    assert guard.flush() == ("网络", None)


def test_flush_reports_a_word_that_needed_the_end(wf: WordFilter) -> None:
    guard = OutputGuard(wf)
    # "scam" at the end of a piece might be "scampi": only the end of the answer decides.
    assert guard.feed("it is a scam").text == "it is a "
    assert guard.flush().hit == Hit("fraud", "scam", 8, 12)


def test_hold_back_is_bounded(wf: WordFilter) -> None:
    """At most the longest word with up to max_gap separators after each character."""
    bound = wf.max_word_size * (1 + wf.max_gap)
    answer = "网 络 赌 ， 网络  赌 网 络   赌 网络 " * 20
    _, hit, held = run(wf, list(answer))
    assert hit is None
    assert max(len(h) for h in held) <= bound
    assert max(len(h) for h in held) > 0


def test_after_a_hit_nothing_more_is_sent(wf: WordFilter) -> None:
    guard = OutputGuard(wf)
    first = guard.feed("洗钱")
    assert first.hit is not None
    assert guard.feed("更多的文字") == ("", first.hit)
    assert guard.flush() == ("", first.hit)
    assert guard.hit == first.hit


def test_feed_after_flush_is_an_error(wf: WordFilter) -> None:
    guard = OutputGuard(wf)
    guard.flush()
    with pytest.raises(RuntimeError):
        guard.feed("x")


ALPHABET = st.sampled_from(
    [*"赌博网络场洗钱不气物馆", "scam", "s", "ca", "m", "pi", *" ，。*\n\u200b好a"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(ALPHABET, max_size=40).map("".join),
    st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_guard_agrees_with_find(answer: str, cuts: list[int]) -> None:
    """Whatever the chunking: a hit iff find() hits, and nothing of the first hit is sent."""
    wf = WordFilter.from_words(WORDS)
    bounds = sorted({min(c, len(answer)) for c in cuts} | {0, len(answer)})
    pieces = [answer[a:b] for a, b in itertools.pairwise(bounds)]
    sent, hit, _ = run(wf, pieces)
    hits = wf.find(answer)
    assert answer.startswith(sent)
    if not hits:
        assert hit is None
        assert sent == answer
    else:
        assert hit in hits
        assert len(sent) <= min(h.start for h in hits)


ALLOWED = ["反洗钱", "洗钱法", "博物馆"]


def test_an_allowed_phrase_split_over_pieces_is_released() -> None:
    wf = WordFilter.from_words(WORDS, allow=ALLOWED)
    sent, hit, _ = run(wf, ["学习反洗", "钱知识"])
    assert (sent, hit) == ("学习反洗钱知识", None)
    # "洗钱" may still become "洗钱法": held back whole until the next piece decides.
    guard = OutputGuard(wf)
    assert guard.feed("学习洗钱") == ("学习", None)
    assert guard.feed("法") == ("洗钱法", None)
    guard = OutputGuard(wf)
    assert guard.feed("学习洗钱").text == "学习"
    assert guard.feed("吧").hit is not None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([*ALPHABET.elements, "反", "法", "物"]), max_size=40).map("".join),
    st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_guard_agrees_with_find_under_an_allow_list(answer: str, cuts: list[int]) -> None:
    wf = WordFilter.from_words(WORDS, allow=ALLOWED)
    bounds = sorted({min(c, len(answer)) for c in cuts} | {0, len(answer)})
    sent, hit, _ = run(wf, [answer[a:b] for a, b in itertools.pairwise(bounds)])
    hits = wf.find(answer)
    assert answer.startswith(sent)
    if not hits:
        assert hit is None and sent == answer
    else:
        assert hit in hits and len(sent) <= min(h.start for h in hits)
