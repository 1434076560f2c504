"""The word filter: disguised words hit, innocent texts do not, spans, word lists, reloading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mpchat.safety.normalize import compact, default_normalizer
from mpchat.safety.wordfilter import Hit, WordFilter, parse_wordlist

WORDS = [
    ("赌博", "gambling"),
    ("网络赌场", "gambling"),
    ("六合彩", "gambling"),
    ("洗钱", "fraud"),
    ("代开发票", "fraud"),
    ("刷单返利", "fraud"),
    ("casino", "gambling"),
    ("scam", "fraud"),
    ("money laundering", "fraud"),
]


@pytest.fixture(scope="module")
def wf() -> WordFilter:
    return WordFilter.from_words(WORDS)


EVASIONS = [
    ("今天去赌博吧", "赌博"),
    ("ＣＡＳＩＮＯ", "casino"),
    ("ｃａｓｉｎｏ", "casino"),
    ("CaSiNo", "casino"),
    ("cásíno", "casino"),
    ("ⓒⓐⓢⓘⓝⓞ", "casino"),
    ("𝐜𝐚𝐬𝐢𝐧𝐨 tonight", "casino"),
    ("赌\u200b博", "赌博"),
    ("赌\u200d博", "赌博"),
    ("洗\ufeff钱", "洗钱"),
    ("洗\u00ad钱", "洗钱"),
    ("六\u2060合\u2060彩", "六合彩"),
    ("赌\ufe0f博", "赌博"),
    ("赌\u0336博\u0336", "赌博"),
    ("赌 博", "赌博"),
    ("赌*博", "赌博"),
    ("赌-博", "赌博"),
    ("赌。博", "赌博"),
    ("赌　博", "赌博"),
    ("洗  钱", "洗钱"),
    ("🎲赌🎲博🎲", "赌博"),
    ("代 开 发 票", "代开发票"),
    ("代*开*发*票", "代开发票"),
    ("代。开。发。票", "代开发票"),
    ("刷 单 返 利", "刷单返利"),
    ("网\n络\n赌\n场", "网络赌场"),
    ("賭博", "赌博"),
    ("洗錢", "洗钱"),
    ("代開發票", "代开发票"),
    ("網絡賭場", "网络赌场"),
    ("賭 博", "赌博"),
    ("賭\u200b*博", "赌博"),
    ("快来赌 博吧", "赌博"),  # glued on both sides, but a space is no sentence break
    ("买六合彩中奖", "六合彩"),
    ("这是scam吧", "scam"),
    ("ｓｃａｍ!", "scam"),
    ("s c a m", "scam"),
    ("S.C.A.M", "scam"),
    ("s\u200bc\u200ba\u200bm", "scam"),
    ("Money Laundering", "money laundering"),
    ("money-laundering", "money laundering"),
    ("moneylaundering", "money laundering"),
    ("ＭＯＮＥＹ　ＬＡＵＮＤＥＲＩＮＧ", "money laundering"),
    ("賭\u3000\u200b博", "赌博"),
]

INNOCENT = [
    "博物馆今天开门，别赌气了",
    "他爱赌。博物馆开门了",  # a sentence ends with 赌, the next starts with 博
    "这次不赌！博士说的对",
    "我把衣服洗，钱放在桌上",
    "要洗？钱呢",
    "洗手之后再数钱",
    "钱洗不干净",
    "博赌",
    "南京六合，彩虹很美",  # 六合 is a district: not spread out, two words
    "南京六合 彩虹桥",
    "六合区的彩票店",
    "帮我代开，发票我自己处理",
    "代开会议发票",
    "别刷单，返利都是骗局",
    "他喜欢上网络，赌场离这里很远",
    "赌\u200b气",
    "賭氣的博士",
    "赌场里没有博物馆",
    "赌\n\n\n\n博",  # too far apart (max_gap=3)
    "scampi is tasty",
    "SCAMPI",
    "This is camping gear",
    "The pass camera",
    "The bass camera",
    "escamotage",
    "his camera, as camels",
    "The occasion was nice",
    "Casablanca in november",
    "money, laundry",
    "Cas, in order",
    "他赌，博物馆",
]


@pytest.mark.parametrize(("text", "word"), EVASIONS)
def test_disguised_words_hit(wf: WordFilter, text: str, word: str) -> None:
    hits = wf.find(text)
    assert [h.word for h in hits] == [word]
    # The span covers the disguised word in the original text.
    norm = default_normalizer()
    span = text[hits[0].start : hits[0].end]
    assert compact(norm.fold(span)) == compact(norm.fold(word))
    assert wf.first(text) == hits[0]


@pytest.mark.parametrize("text", INNOCENT)
def test_innocent_texts_do_not_hit(wf: WordFilter, text: str) -> None:
    assert wf.find(text) == []
    assert wf.first(text) is None


def test_tables_are_large_enough() -> None:
    assert len(EVASIONS) >= 30
    assert len(INNOCENT) >= 30


def test_a_sentence_break_at_the_edge_still_hits(wf: WordFilter) -> None:
    """The documented trade-off: only a break glued to letters on both sides is let through."""
    assert [h.word for h in wf.find("赌。\n博物馆")] == ["赌博"]


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("今天去赌博吧", (3, 5)),
        ("\u200b\u200b赌博", (2, 4)),
        ("今天去赌\u200b\u200b博吧", (3, 7)),
        ("a ＣＡＳＩＮＯ z", (2, 8)),
        ("我说：代 * 开 * 发 * 票。", (3, 16)),
        ("㈱赌博", (1, 3)),
        ("ﬁ scam ﬁ", (2, 6)),
        ("x 𝐜𝐚𝐬𝐢𝐧𝐨 y", (2, 8)),
    ],
)
def test_spans_map_to_the_original_text(wf: WordFilter, text: str, span: tuple[int, int]) -> None:
    (hit,) = wf.find(text)
    assert (hit.start, hit.end) == span


def test_several_hits_in_order(wf: WordFilter) -> None:
    text = "先赌博，再洗 钱，最后去 casino"
    assert wf.find(text) == [
        Hit("gambling", "赌博", 1, 3),
        Hit("fraud", "洗钱", 5, 8),
        Hit("gambling", "casino", 13, 19),
    ]
    assert wf.first(text) == Hit("gambling", "赌博", 1, 3)


def test_overlapping_words_both_hit() -> None:
    wf = WordFilter.from_words(["赌博", "网络赌博"])
    assert {h.word for h in wf.find("网络赌博")} == {"赌博", "网络赌博"}


def test_max_gap_is_configurable() -> None:
    assert WordFilter.from_words(["赌博"], max_gap=1).find("赌  博") == []
    assert WordFilter.from_words(["赌博"], max_gap=2).find("赌  博") != []


def test_traditional_words_in_the_list_match_simplified_text() -> None:
    wf = WordFilter.from_words([("賭博", "gambling")])
    assert wf.find("赌博") == [Hit("gambling", "賭博", 0, 2)]


def test_words_that_fold_to_nothing_and_duplicates_are_skipped() -> None:
    wf = WordFilter.from_words([("\u200b", "x"), ("***", "x"), ("赌博", "a"), ("賭博", "b")])
    assert wf.size == 1
    assert wf.find("赌博")[0].rule == "a"


def test_empty_list_finds_nothing() -> None:
    wf = WordFilter.from_words([])
    assert wf.find("赌博") == []
    assert wf.size == 0


def test_parse_wordlist_format() -> None:
    text = "# comment\n\n赌博\tgambling\n  洗钱  \n# 六合彩\nscam\tfraud\textra\n"
    assert parse_wordlist(text, default_rule="ops") == [
        ("赌博", "gambling"),
        ("洗钱", "ops"),
        ("scam", "fraud"),
    ]


def test_shipped_default_list() -> None:
    wf = WordFilter.from_files([])
    assert wf.size >= 5
    assert [h.rule for h in wf.find("来玩賭 博")] == ["gambling"]
    assert wf.find("今天天气很好") == []
    assert wf.reload_if_changed() is False


def test_rule_defaults_to_the_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "ops.txt"
    path.write_text("\ufeff赌博\n洗钱\tfraud\n", encoding="utf-8")  # a BOM is tolerated
    wf = WordFilter.from_files([path])
    assert [(h.rule, h.word) for h in wf.find("赌博洗钱")] == [("ops", "赌博"), ("fraud", "洗钱")]


def test_several_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("赌博\n", encoding="utf-8")
    b.write_text("洗钱\n", encoding="utf-8")
    wf = WordFilter.from_files([a, b])
    assert [h.rule for h in wf.find("赌博洗钱")] == ["a", "b"]


def test_missing_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        WordFilter.from_files([tmp_path / "missing.txt"])


def _touch_later(path: Path) -> None:
    # Make the change visible even on a file system with coarse timestamps.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_reload_picks_up_an_edit(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("赌博\n", encoding="utf-8")
    wf = WordFilter.from_files([path])
    assert wf.reload_if_changed() is False
    assert wf.find("洗钱") == []

    path.write_text("赌博\n洗钱\n", encoding="utf-8")
    _touch_later(path)
    assert wf.reload_if_changed() is True
    assert [h.word for h in wf.find("洗钱")] == ["洗钱"]
    assert wf.reload_if_changed() is False


def test_reload_after_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("赌博\n", encoding="utf-8")
    wf = WordFilter.from_files([path])
    new = tmp_path / "words.txt.new"
    new.write_text("洗钱\n", encoding="utf-8")
    os.replace(new, path)
    _touch_later(path)
    assert wf.reload_if_changed() is True
    assert wf.find("赌博") == []
    assert wf.find("洗钱") != []


def test_a_vanished_file_keeps_the_last_good_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "words.txt"
    path.write_text("赌博\n", encoding="utf-8")
    wf = WordFilter.from_files([path])
    path.unlink()
    assert wf.reload_if_changed() is False
    assert "reload failed" in caplog.text
    assert wf.find("赌博") != []
    # And it comes back once the file does.
    path.write_text("洗钱\n", encoding="utf-8")
    assert wf.reload_if_changed() is True
    assert wf.find("赌博") == []


def test_reload_checks_at_most_every_min_interval(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("赌博\n", encoding="utf-8")
    wf = WordFilter.from_files([path], min_interval=3600)
    path.write_text("洗钱\n", encoding="utf-8")
    _touch_later(path)
    assert wf.reload_if_changed() is False
    assert wf.find("赌博") != []


def test_an_english_term_inside_a_longer_word_is_not_a_hit() -> None:
    wf = WordFilter.from_words([("ass", "abuse"), ("scam", "fraud")])
    assert wf.find("a class assignment on bass and scampi, or passé") == []
    assert [h.word for h in wf.find("what an ass!")] == ["ass"]
    assert [h.word for h in wf.find("这是scam吧")] == ["scam"]  # CJK next to it is a boundary


def test_hits_name_the_list_file_they_came_from(tmp_path: Path) -> None:
    ops, money = tmp_path / "ops.txt", tmp_path / "fraud.txt"
    ops.write_text("赌博\n", encoding="utf-8")
    money.write_text("洗钱\tmoney\n", encoding="utf-8")
    hits = WordFilter.from_files([ops, money]).find("赌博洗钱")
    assert [(h.rule, h.source) for h in hits] == [("ops", "ops.txt:1"),
                                                  ("money", "fraud.txt:1")]
    assert WordFilter.from_files([]).find("赌博")[0].source.startswith("default.txt:")
    assert WordFilter.from_words(["赌博"]).find("赌博")[0].source == ""


def test_an_allowed_phrase_overrules_a_listed_word_inside_it() -> None:
    wf = WordFilter.from_words([("洗钱", "fraud"), ("scam", "fraud")],
                               allow=["反洗钱", "scam alert"])
    assert wf.find("学习反洗钱知识") == []
    assert wf.find("学习反 洗錢知识") == []  # folded and compacted like the words
    assert [h.word for h in wf.find("教你洗钱")] == ["洗钱"]
    assert [(h.word, h.start) for h in wf.find("反洗钱，然后洗钱")] == [("洗钱", 6)]
    assert wf.find("a SCAM ALERT from the bank") == []
    assert [h.word for h in wf.find("a scam, alerted")] == ["scam"]


def test_allow_list_files_are_read_and_reloaded(tmp_path: Path) -> None:
    words, allow = tmp_path / "words.txt", tmp_path / "allow.txt"
    words.write_text("洗钱\n", encoding="utf-8")
    allow.write_text("# innocent phrases\n反洗钱\t(the law against it)\n", encoding="utf-8")
    wf = WordFilter.from_files([words], allow=[allow])
    assert wf.find("反洗钱") == [] and wf.find("洗钱法") != []
    allow.write_text("反洗钱\n洗钱法\n", encoding="utf-8")
    _touch_later(allow)
    assert wf.reload_if_changed() is True
    assert wf.find("洗钱法") == []
