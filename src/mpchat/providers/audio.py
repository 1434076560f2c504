"""The provider's OpenAI-compatible audio endpoints: speech to text, and text to speech.

`AudioClient` calls ``{base_url}/audio/transcriptions`` (multipart: ``file``, ``model``) and
``{base_url}/audio/speech`` (JSON: ``model``, ``voice``, ``input``) of the chat provider
(the first route whose provider names audio models in the config file, else the first
route: same base URL and key), with those models or ``MPCHAT_TRANSCRIPTION_MODEL``,
``MPCHAT_SPEECH_MODEL`` and ``MPCHAT_SPEECH_VOICE``. Failures are the chat's errors:
`UpstreamError`, `UpstreamTimeout`, `ServiceUnavailable` when no provider speaks audio.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
import orjson

from mpchat.errors import ServiceUnavailable, UpstreamError, UpstreamTimeout
from mpchat.providers.openai import OpenAICompatible

__all__ = ["AudioClient", "Speech"]

log = logging.getLogger("mpchat.audio")

_MAX_SPEECH_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Speech:
    audio: bytes
    content_type: str


class AudioClient:
    def __init__(self, *, session: aiohttp.ClientSession, provider: object,
                 transcription_model: str, speech_model: str, speech_voice: str,
                 timeout: float = 60.0) -> None:
        # Only an OpenAI-compatible provider has audio endpoints (not the demo model).
        self._provider = provider if isinstance(provider, OpenAICompatible) else None
        self._session = session
        own = self._provider.audio if self._provider is not None else {}
        self.transcription_model = own.get("transcription_model", transcription_model)
        self.speech_model = own.get("speech_model", speech_model)
        self.speech_voice = own.get("speech_voice", speech_voice)
        self._timeout = timeout

    @property
    def available(self) -> bool:
        return self._provider is not None

    def _target(self) -> OpenAICompatible:
        if self._provider is None:
            raise ServiceUnavailable("语音服务未配置")
        return self._provider

    async def transcribe(self, audio: bytes, *, filename: str, content_type: str) -> str:
        """The recording's text (may be empty: nothing was recognised)."""
        provider = self._target()
        form = aiohttp.FormData()
        form.add_field("file", audio, filename=filename, content_type=content_type)
        form.add_field("model", self.transcription_model)
        form.add_field("response_format", "json")
        body, _ = await self._post(provider, "/audio/transcriptions", data=form)
        try:
            text = orjson.loads(body)["text"]
        except (ValueError, KeyError, TypeError):
            log.warning("transcription: an answer without text from %s", provider.name)
            raise UpstreamError() from None
        if not isinstance(text, str):
            raise UpstreamError()
        return text

    async def speak(self, text: str) -> Speech:
        provider = self._target()
        payload = {"model": self.speech_model, "voice": self.speech_voice, "input": text,
                   "response_format": "mp3"}
        body, content_type = await self._post(provider, "/audio/speech", json=payload)
        return Speech(body, content_type or "audio/mpeg")

    async def _post(self, provider: OpenAICompatible, path: str, *,
                    data: aiohttp.FormData | None = None,
                    json: dict[str, str] | None = None) -> tuple[bytes, str]:
        """The body and content type of a 200; the chat's errors otherwise."""
        url = provider.base_url + path
        try:
            async with asyncio.timeout(self._timeout):
                async with self._session.post(url, headers=provider.auth(), data=data,
                                              json=json) as resp:
                    if resp.status != 200:
                        log.warning("%s: status %s from %s", path, resp.status, provider.name)
                        raise UpstreamError()
                    body = await resp.content.read(_MAX_SPEECH_BYTES + 1)
                    if len(body) > _MAX_SPEECH_BYTES:
                        raise UpstreamError()
                    return body, resp.content_type
        except TimeoutError:
            raise UpstreamTimeout() from None
        except aiohttp.ClientError as exc:
            log.warning("%s: %s from %s", path, type(exc).__name__, provider.name)
            raise UpstreamError() from None
