"""The fake provider's audio endpoints, OpenAI's shapes (`mpchat.fakes.upstream` mounts them).

``POST /v1/audio/transcriptions`` checks the multipart upload (a non-empty ``file`` part and
a ``model`` field) and answers ``{"text": ...}``: the next of ``transcripts`` (scripted),
else ``default_transcript``. ``POST /v1/audio/speech`` checks its JSON (``model``, ``voice``,
a non-empty ``input``) and answers a small valid WAV it generates (16 kHz mono 16-bit, a
quiet tone, 40 ms per character of input, at most two seconds). ``latency`` delays both.
"""

from __future__ import annotations

import asyncio
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from mpchat.voice.recording import wav_from_pcm

__all__ = ["FakeAudio", "make_wav"]


def make_wav(seconds: float, *, rate: int = 16000) -> bytes:
    """A valid WAV file: a quiet 440 Hz tone of ``seconds``."""
    frames = max(int(seconds * rate), 1)
    samples = b"".join(struct.pack("<h", int(800 * math.sin(2 * math.pi * 440 * i / rate)))
                       for i in range(frames))
    return wav_from_pcm(samples, rate)


@dataclass(slots=True)
class FakeAudio:
    default_transcript: str = "你好"
    transcripts: list[str] = field(default_factory=list)  # popped first
    latency: float = 0.0
    # What arrived: transcription uploads (model, filename, content type, size, fields) and
    # speech requests (their JSON bodies).
    uploads: list[dict[str, Any]] = field(default_factory=list)
    speech: list[dict[str, Any]] = field(default_factory=list)
    keep: bool = True  # record what arrived (off for a long-running server)

    def mount(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)

    async def _transcriptions(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/form-data"):
            return _error(400, "expected multipart/form-data")
        fields: dict[str, str] = {}
        upload: dict[str, Any] | None = None
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            data = await part.read()
            if part.name == "file":
                upload = {"filename": part.filename, "size": len(data),
                          "content_type": part.headers.get("Content-Type"), "head": data[:12]}
            else:
                fields[part.name] = data.decode()
        if upload is None or not upload["size"]:
            return _error(400, "no file")
        if not fields.get("model"):
            return _error(400, "no model")
        if self.keep:
            self.uploads.append(upload | {"model": fields["model"], "fields": fields})
        await asyncio.sleep(self.latency)
        text = self.transcripts.pop(0) if self.transcripts else self.default_transcript
        return web.json_response({"text": text})

    async def _speech(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict) or not body.get("model") or not body.get("voice"):
            return _error(400, "model and voice are required")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "input is required")
        if self.keep:
            self.speech.append(body)
        await asyncio.sleep(self.latency)
        return web.Response(body=make_wav(min(0.04 * len(text), 2.0)),
                            content_type="audio/wav")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "fake"}}, status=status)
