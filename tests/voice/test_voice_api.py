"""Voice in and out against the fake provider (issue 12, items 3 to 5)."""

from __future__ import annotations

import io
import wave
from typing import Any

import orjson
import pytest

from mpchat.chat.profiles import VOICE_PROMPT
from mpchat.fakes.audio import make_wav
from mpchat.fakes.upstream import FakeUpstream
from tests.utils import running_app

PAD = bytes(range(256)) * 2
SAMPLES: dict[str, bytes] = {
    "audio/mpeg": b"ID3\x04\x00\x00" + PAD,
    "audio/aac": b"\xff\xf1\x50\x80" + PAD,
    "audio/wav": make_wav(0.5),
    "audio/x-m4a": b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + PAD,
    "audio/pcm": b"\x01\x00" * 8000,  # 0.5 s at 16 kHz
}


def _settings(settings_factory: Any, fake: FakeUpstream, **extra: Any) -> Any:
    return settings_factory(upstream_base_url=fake.base_url, upstream_api_key="sk-test-key-123456",
                            upstream_model="fake-model", **extra)


async def _post(app: Any, token: str, body: bytes, content_type: str,
                query: str = "") -> tuple[int, list[dict[str, Any]] | dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    async with app.http.post(f"{app.base_url}/api/v1/voice{query}", data=body,
                             headers=headers) as r:
        raw = await r.read()
        if r.content_type == "application/json":
            return r.status, orjson.loads(raw)
        return r.status, [orjson.loads(line) for line in raw.splitlines() if line]


@pytest.mark.parametrize("content_type", list(SAMPLES))
async def test_each_format_is_transcribed_then_answered(settings_factory, fake_upstream,
                                                        content_type):
    fake_upstream.audio.transcripts = ["明天杭州天气怎么样"]
    fake_upstream.script = [{"text": ["明天晴。", "气温二十度。"]}]
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        token = await app.login("voice")
        status, events = await _post(app, token, SAMPLES[content_type], content_type)
        assert status == 200, events
        assert isinstance(events, list)
        kinds = [e["type"] for e in events]
        assert kinds[0] == "transcript" and events[0]["text"] == "明天杭州天气怎么样"
        assert kinds[1] == "start" and kinds[-1] == "done"
        assert "".join(e["text"] for e in events if e["type"] == "delta") == "明天晴。气温二十度。"
        upload = fake_upstream.audio.uploads[-1]
        assert upload["model"] == "whisper-1" and upload["size"] > 0
        if content_type in ("audio/pcm", "audio/wav"):
            assert upload["head"].startswith(b"RIFF") and upload["filename"].endswith(".wav")
        # The transcript is the question, with the voice profile's prompt.
        sent = fake_upstream.stats.received[-1]
        assert sent[0]["content"] == VOICE_PROMPT and sent[-1]["content"] == "明天杭州天气怎么样"


@pytest.mark.parametrize(("body", "content_type", "status", "code"), [
    (b"", "audio/mpeg", 400, "empty_audio"),
    (b"x" * 3000, "audio/mpeg", 400, "audio_too_large"),
    (b"\x00" * 500, "audio/mpeg", 400, "invalid_audio"),
    (b"RIFF\x00\x00\x00\x00WAVEjunkjunk" + b"\x00" * 200, "audio/wav", 400, "invalid_audio"),
    (make_wav(0.01), "audio/wav", 400, "empty_audio"),
    (b"\x00" * 301, "audio/pcm", 400, "invalid_audio"),
    (b"hello", "text/plain", 400, "unsupported_audio"),
    (b"\x00" * 500, "audio/ogg", 400, "unsupported_audio"),
    (b"x" * 5000, "audio/mpeg", 413, "payload_too_large"),  # over twice the bound
])
async def test_bad_recordings_are_refused_before_anything_is_sent(
    settings_factory, fake_upstream, body, content_type, status, code
):
    async with running_app(_settings(settings_factory, fake_upstream,
                                     max_audio_bytes=2000)) as app:
        token = await app.login("bad")
        got, error = await _post(app, token, body, content_type)
        assert got == status and isinstance(error, dict), error
        assert error["error"]["code"] == code
        assert fake_upstream.audio.uploads == [] and fake_upstream.stats.requests == 0


async def test_nothing_recognised_and_rejected_transcripts(settings_factory, fake_upstream):
    fake_upstream.audio.transcripts = ["  ", "哪里可以赌博"]
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        token = await app.login("unsafe")
        status, error = await _post(app, token, SAMPLES["audio/wav"], "audio/wav")
        assert status == 400 and isinstance(error, dict)
        assert error["error"]["code"] == "empty_audio"
        status, error = await _post(app, token, SAMPLES["audio/wav"], "audio/wav")
        assert status == 400 and isinstance(error, dict)
        assert error["error"]["code"] == "content_rejected"
        assert fake_upstream.stats.requests == 0  # no chat call
        status, error = await _post(app, token, SAMPLES["audio/wav"], "audio/wav",
                                    "?profile=nope")
        assert status == 400
        assert len(fake_upstream.audio.uploads) == 2  # the unknown profile: not transcribed


async def _answer(app: Any, fake: FakeUpstream, token: str, text: list[str]) -> str:
    fake.script = [{"text": text}]
    status, events = await app.chat_events(token, {"content": "说说看"})
    assert status == 200
    return str(events[0]["message_id"])


async def test_an_answer_is_read_aloud_whole_or_by_sentence(settings_factory, fake_upstream):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        token = await app.login("speaker")
        headers = {"Authorization": f"Bearer {token}"}
        message = await _answer(app, fake_upstream, token,
                                ["## 结论\n**好的**😀，请看 https://x.cn 。", "第二句！"])
        url = f"{app.base_url}/api/v1/messages/{message}/speech"
        async with app.http.get(url, headers=headers) as r:
            assert r.status == 200 and r.content_type == "audio/wav"
            audio = await r.read()
            assert r.headers["X-Mpchat-Sentences"] == "3"
        with wave.open(io.BytesIO(audio)) as w:
            assert w.getnframes() > 0
        spoken = fake_upstream.audio.speech[-1]
        assert spoken["model"] == "tts-1" and spoken["voice"] == "alloy"
        assert spoken["input"] == "结论\n好的，请看 。第二句！"
        said = []
        for n in range(4):
            async with app.http.get(url, params={"sentence": str(n)}, headers=headers) as r:
                said.append(r.status)
        assert said == [200, 200, 200, 204]
        assert [s["input"] for s in fake_upstream.audio.speech[-3:]] == [
            "结论", "好的，请看 。", "第二句！"]


async def test_speech_of_another_users_or_a_retracted_answer_is_refused(
    settings_factory, fake_upstream
):
    from sqlalchemy import update

    from mpchat.storage.tables import messages

    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        alice = await app.login("alice")
        eve = await app.login("eve")
        message = await _answer(app, fake_upstream, alice, ["你好。"])
        url = f"{app.base_url}/api/v1/messages/{message}/speech"
        async with app.http.get(url, headers={"Authorization": f"Bearer {eve}"}) as r:
            assert r.status == 404
        async with app.services.engine.begin() as conn:
            await conn.execute(update(messages).where(messages.c.id == message)
                               .values(status="retracted"))
        async with app.http.get(url, headers={"Authorization": f"Bearer {alice}"}) as r:
            assert r.status == 410 and (await r.json())["error"]["code"] == "retracted"
        assert fake_upstream.audio.speech == []


async def test_sentences_can_be_spoken_while_the_answer_streams(settings_factory,
                                                                 fake_upstream):
    fake_upstream.script = [{"text": ["第一句。", "第二", "句", "完。"], "trickle": 0.3}]
    async with running_app(_settings(settings_factory, fake_upstream,
                                     answer_save_interval=0.05)) as app:
        token = await app.login("early")
        headers = {"Authorization": f"Bearer {token}"}
        async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "讲讲"},
                                 headers=headers) as chat:
            start = orjson.loads(await chat.content.readline())
            url = f"{app.base_url}/api/v1/messages/{start['message_id']}/speech"
            while orjson.loads(await chat.content.readline())["type"] != "delta":
                pass
            async with app.http.get(url, params={"sentence": "0"}, headers=headers) as r:
                assert r.status == 200  # the first sentence, before the answer ended
                assert fake_upstream.audio.speech[-1]["input"] == "第一句。"
            async with app.http.get(url, params={"sentence": "1"}, headers=headers) as r:
                assert r.status == 409 and (await r.json())["error"]["code"] == "not_ready"
                assert r.headers["Retry-After"] == "1"
            async with app.http.get(url, headers=headers) as r:
                assert r.status == 409  # the whole answer: once it ended
            await chat.read()
        await app.services.chat.wait_idle()
        async with app.http.get(url, params={"sentence": "1"}, headers=headers) as r:
            assert r.status == 200 and fake_upstream.audio.speech[-1]["input"] == "第二句完。"
        async with app.http.get(url, params={"sentence": "2"}, headers=headers) as r:
            assert r.status == 204 and r.headers["X-Mpchat-Sentences"] == "2"


async def test_the_fakes_latency_and_transcript_knobs():
    from mpchat.fakes.upstream import FakeUpstreamConfig

    config = FakeUpstreamConfig(audio_latency=0.2, transcript="脚本")
    async with FakeUpstream(config) as fake:
        import time

        import aiohttp

        form = aiohttp.FormData()
        form.add_field("file", b"ID3" + PAD, filename="a.mp3", content_type="audio/mpeg")
        form.add_field("model", "whisper-1")
        async with aiohttp.ClientSession() as http:
            began = time.monotonic()
            async with http.post(fake.base_url + "/audio/transcriptions", data=form) as r:
                assert r.status == 200 and (await r.json()) == {"text": "脚本"}
            assert time.monotonic() - began >= 0.2
            async with http.post(fake.base_url + "/audio/transcriptions", data=b"x",
                                 headers={"Content-Type": "audio/mpeg"}) as r:
                assert r.status == 400  # not multipart
            async with http.post(fake.base_url + "/audio/speech",
                                 json={"model": "tts-1", "voice": "alloy", "input": ""}) as r:
                assert r.status == 400


async def test_over_the_rate_limit_nothing_is_transcribed(settings_factory, fake_upstream):
    async with running_app(_settings(settings_factory, fake_upstream,
                                     rate_limit="1/minute")) as app:
        token = await app.login("limited")
        status, _ = await _post(app, token, SAMPLES["audio/wav"], "audio/wav")
        assert status == 200
        status, error = await _post(app, token, SAMPLES["audio/wav"], "audio/wav")
        assert status == 429 and isinstance(error, dict)
        assert error["error"]["code"] == "rate_limited"
        assert len(fake_upstream.audio.uploads) == 1


async def test_a_provider_of_the_config_file_names_its_audio_models(settings_factory,
                                                                    fake_upstream, tmp_path):
    config = tmp_path / "mpchat.toml"
    config.write_text(
        f'[[providers]]\nname = "chat"\nbase_url = "{fake_upstream.base_url}"\n'
        'api_key = "sk-test-key-123456"\nmodels = ["fake-model"]\n\n'
        f'[[providers]]\nname = "asr"\nbase_url = "{fake_upstream.base_url}"\n'
        'api_key = "sk-test-key-123456"\nmodels = ["fake-model"]\npriority = 2\n'
        'transcription_model = "sensevoice-small"\nspeech_voice = "zh-female"\n',
        encoding="utf-8")
    async with running_app(settings_factory(config=config)) as app:
        token = await app.login("asr")
        status, events = await _post(app, token, SAMPLES["audio/wav"], "audio/wav")
        assert status == 200 and isinstance(events, list)
        assert fake_upstream.audio.uploads[-1]["model"] == "sensevoice-small"
        message = events[1]["message_id"]
        async with app.http.get(f"{app.base_url}/api/v1/messages/{message}/speech",
                                headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
        assert fake_upstream.audio.speech[-1]["voice"] == "zh-female"
        assert fake_upstream.audio.speech[-1]["model"] == "tts-1"  # unset: the setting's


async def test_voice_into_another_users_conversation_is_404(settings_factory, fake_upstream):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        alice, eve = await app.login("alice"), await app.login("eve")
        _, events = await app.chat_events(alice, {"content": "alice's words"})
        cid = events[0]["conversation_id"]
        status, error = await _post(app, eve, SAMPLES["audio/wav"], "audio/wav",
                                    f"?conversation_id={cid}")
        assert status == 404 and isinstance(error, dict)
        assert error["error"]["code"] == "not_found"
