"""The speech normaliser and the recording checks, table-driven."""

from __future__ import annotations

import pytest

from mpchat.errors import AudioTooLarge, EmptyAudio, InvalidAudio, UnsupportedAudio
from mpchat.fakes.audio import make_wav
from mpchat.voice.recording import check_recording
from mpchat.voice.speech_text import sentences, speakable


@pytest.mark.parametrize(("text", "spoken"), [
    # Markdown
    ("# 标题\n正文", "标题\n正文"),
    ("**加粗**和*斜体*和~~删除~~", "加粗和斜体和删除"),
    ("- 第一项\n- 第二项", "第一项\n第二项"),
    ("1. 打开设置\n2) 点击关于", "打开设置\n点击关于"),
    ("> 引用的话", "引用的话"),
    ("上文\n\n---\n\n下文", "上文\n下文"),
    ("| 名称 | 价格 |\n|---|---:|\n| 苹果 | 5元 |", "名称，价格。\n苹果，5元。"),
    ("[官网](https://example.com)有说明", "官网有说明"),
    ("看图![示意图](a.png)", "看图"),
    # code
    ("运行 `pip install x` 即可", "运行 pip install x 即可"),
    ("示例：\n```python\nprint('hi')\n```\n好了", "示例：\n好了"),
    ("没有结束的代码 ```js\nlet a", "没有结束的代码"),
    # URLs and e-mail
    ("详见 https://example.com/a?b=1 。", "详见 。"),
    ("访问www.example.com，或发邮件到 a.b@example.com", "访问，或发邮件到"),
    ("（见 http://x.cn/p）", "（见 ）"),
    # emoji
    ("好的😀👍🏻！", "好的！"),
    ("天气☀️不错", "天气不错"),
    ("家庭👨‍👩‍👧出游", "家庭出游"),
    # numbers and units, the Chinese way
    ("气温 25℃", "气温 25摄氏度"),
    ("零下 -5°C", "零下 负5摄氏度"),
    ("距离 3.5km", "距离 3.5公里"),
    ("时速 60km/h", "时速 60公里每小时"),
    ("重 2kg，长 30cm", "重 2千克，长 30厘米"),
    ("折扣 20%", "折扣 百分之20"),
    ("价格 ¥99", "价格 99元"),
    ("售价 $5", "售价 5美元"),
    ("会议在 14:30 开始", "会议在 14点30分 开始"),
    ("日期 2026-11-30", "日期 2026年11月30日"),
    ("需要 3~5 天", "需要 3到5 天"),
    ("版本 v2 和 Python 3.12", "版本 v2 和 Python 3.12"),  # no unit: left alone
    ("", ""),
])
def test_speakable(text: str, spoken: str):
    assert speakable(text) == spoken


def test_sentences_cut_after_terminators_and_line_ends():
    assert sentences("第一句。第二句！第三句？\n## 小标题\n最后没有标点") == [
        "第一句。", "第二句！", "第三句？", "小标题", "最后没有标点"]
    assert sentences("😀 ```x```") == []
    assert sentences("等等……然后呢；好") == ["等等……", "然后呢；", "好"]


@pytest.mark.parametrize(("body", "content_type", "error"), [
    (b"", "audio/mpeg", EmptyAudio),
    (b"ID3" + b"\x00" * 100, "audio/ogg", UnsupportedAudio),
    (b"ID3" + b"\x00" * 3000, "audio/mpeg", AudioTooLarge),
    (b"\x00" * 100, "audio/aac", InvalidAudio),
    (b"\x00" * 100, "audio/x-m4a", InvalidAudio),
    (b"RIFF1234WAVE", "audio/wav", InvalidAudio),
    (make_wav(0.05), "audio/wav", EmptyAudio),
    (b"\x00" * 3, "audio/pcm", InvalidAudio),
])
def test_bad_recordings(body: bytes, content_type: str, error: type[Exception]):
    with pytest.raises(error):
        check_recording(body, content_type, max_bytes=2000)


def test_long_recordings_are_refused_by_duration():
    with pytest.raises(AudioTooLarge):
        check_recording(b"\x00\x00" * 8000 * 121, "audio/pcm", max_bytes=10**7, sample_rate=8000)
    ok = check_recording(b"\x00\x00" * 8000, "audio/pcm; codec=x", max_bytes=10**7,
                         sample_rate=8000)
    assert ok.seconds == 1.0 and ok.audio.startswith(b"RIFF") and ok.filename == "recording.wav"
