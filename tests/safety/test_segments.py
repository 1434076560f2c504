"""The segmenter: segments as large as one call, cut at sentence ends when old enough."""

from __future__ import annotations

import pytest

from mpchat.safety.segments import (
    CONTEXT_CHARS,
    STREAM_POLICY,
    STRICT_POLICY,
    Segment,
    Segmenter,
    SegmentPolicy,
)
from mpchat.wechat.security import MAX_CONTENT_CHARS


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_segment_waits_until_old_enough_then_ends_at_the_last_sentence_end() -> None:
    clock = Clock()
    seg = Segmenter(SegmentPolicy(ages=(20.0,)), clock=clock)
    assert seg.add("第一句。") == [] and seg.due_at() == 120.0
    clock.now = 119.9
    assert seg.add("第二句，还有") == []
    clock.now = 120.0
    assert seg.add("一些。第三") == [Segment("第一句。第二句，还有一些。")]
    # The partial sentence left over is as old as the piece it came with.
    assert seg.pending == "第三" and seg.due_at() == 140.0 and seg.count == 1


def test_without_a_sentence_end_the_cut_is_at_a_pause_or_all_of_it() -> None:
    clock = Clock()
    seg = Segmenter(SegmentPolicy(ages=(0.0, 1.0)), clock=clock)
    assert seg.add("你好，我是") == [Segment("你好，")]
    assert seg.pending == "我是" and seg.take_due() == []
    clock.now += 1.0
    assert seg.take_due() == [Segment("我是")]
    # Cut inside running text: the next segment is sent with the end of this one.
    seg.add("助手")
    clock.now += 1.0
    assert seg.take_due() == [Segment("助手", context="我是")]


def test_a_segment_never_exceeds_one_call() -> None:
    clock = Clock()
    seg = Segmenter(STREAM_POLICY, clock=clock)
    first = seg.add("长" * 6000)
    assert [len(s.text) for s in first] == [STREAM_POLICY.max_chars] * 2
    assert first[1].context == "长" * CONTEXT_CHARS
    assert all(len(s.check_text) <= MAX_CONTENT_CHARS for s in first)
    assert len(seg.pending) == 6000 - 2 * STREAM_POLICY.max_chars
    sentences = "一句完整的话。" * 500
    cut = Segmenter(STREAM_POLICY, clock=clock).add(sentences)
    assert cut[0].text.endswith("。") and len(cut[0].text) <= STREAM_POLICY.max_chars


def test_the_last_segment_carries_the_answer_before_it_as_far_as_one_call_goes() -> None:
    clock = Clock()
    seg = Segmenter(SegmentPolicy(ages=(0.0, 60.0)), clock=clock)
    assert seg.add("开头。") == [Segment("开头。")]
    seg.add("结尾")
    assert seg.rest() == Segment("结尾", context="开头。")
    assert seg.rest() is None and seg.count == 2

    long = Segmenter(STREAM_POLICY, clock=clock)
    long.add("句子。" * 1000)  # 3,000 characters: one segment cut, 520 left
    last = long.rest()
    assert last is not None and len(last.check_text) == MAX_CONTENT_CHARS


def test_strict_ages_double_from_at_once() -> None:
    assert [STRICT_POLICY.age(k) for k in range(8)] == [0, 1, 2, 4, 8, 16, 16, 16]
    assert [STREAM_POLICY.age(k) for k in range(3)] == [20, 20, 20]


@pytest.mark.parametrize("ages", [(), (-1.0,)])
def test_policy_refuses_nonsense(ages: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        SegmentPolicy(ages=ages)
    with pytest.raises(ValueError):
        SegmentPolicy(ages=(1.0,), max_chars=MAX_CONTENT_CHARS)
