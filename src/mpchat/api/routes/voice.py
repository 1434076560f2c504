"""Voice: POST /api/v1/voice (a recording in, the chat stream out) and an answer read aloud.

`voice` checks the recording (`mpchat.voice.recording`) before anything is sent, has the
provider transcribe it, and hands the transcript to `ChatService.start` like typed content
(input safety, limits, quotas, the ``voice`` profile by default). The stream is the chat's,
with one ``transcript`` line before ``start``. The audio is never stored or logged.

`speech` reads an answer of the caller aloud, after `mpchat.voice.speech_text.speakable`;
``?sentence=N`` asks for its N-th sentence only (0-based), which may be asked while the answer
is still streaming: 409 ``not_ready`` until that sentence is complete, 204 past the last one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from mpchat.api.deps import Caller, Svc
from mpchat.api.streaming import FollowResponse, ai_headers
from mpchat.blank import is_blank
from mpchat.chat.service import ChatRequest
from mpchat.errors import EmptyAudio, InvalidRequest, NotFound, NotReady, RateLimited, Retracted
from mpchat.providers.audio import AudioClient
from mpchat.services import Services
from mpchat.storage import answers as stored
from mpchat.voice.recording import check_recording
from mpchat.voice.speech_text import sentences, speakable

router = APIRouter(prefix="/api/v1", tags=["voice"])

VOICE_PATH = "/api/v1/voice"
MessageId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


def audio_client(svc: Services) -> AudioClient:
    """The chat provider's audio endpoints: the first route whose provider names audio models
    in the config file, else the first route's."""
    settings = svc.settings
    providers = [route.provider for route in svc.upstream.routes]
    provider = next((p for p in providers if getattr(p, "audio", None)),
                    providers[0] if providers else None)
    return AudioClient(session=svc.http, provider=provider,
                       transcription_model=settings.transcription_model,
                       speech_model=settings.speech_model, speech_voice=settings.speech_voice)


@router.post(VOICE_PATH.removeprefix("/api/v1"),
             responses={200: {"content": {"application/x-ndjson": {}}}})
async def voice(
    request: Request,
    caller: Caller,
    svc: Svc,
    conversation_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
    profile: Annotated[str, Query(max_length=40)] = "voice",
    sample_rate: Annotated[int, Query(ge=8000, le=48000)] = 16000,  # audio/pcm only
) -> Response:
    recording = check_recording(await request.body(), request.headers.get("content-type", ""),
                                max_bytes=svc.settings.max_audio_bytes,
                                sample_rate=sample_rate)
    if profile not in svc.chat.profiles:  # before the provider is paid to transcribe
        raise InvalidRequest("未知的 profile")
    # Over the rate limit: refused before the provider transcribes anything (the turn itself
    # is counted by `ChatService.start`, as for typed text).
    decision = await svc.chat.limiter.peek(caller.user_id)
    if not decision.allowed:
        raise RateLimited(retry_after=decision.retry_after)
    text = await audio_client(svc).transcribe(recording.audio, filename=recording.filename,
                                              content_type=recording.content_type)
    del recording  # never kept
    text = text.strip()
    if is_blank(text):
        raise EmptyAudio()
    answer = await svc.chat.start(ChatRequest(user_id=caller.user_id, content=text,
                                              conversation_id=conversation_id, profile=profile))
    await answer.wait_started()
    if answer.failure is not None and not answer.start_published:
        raise answer.failure
    first = orjson.dumps({"type": "transcript", "text": text}) + b"\n"

    async def lines() -> AsyncIterator[bytes]:
        yield first
        async for line in answer.lines_after(-1):
            yield line

    return FollowResponse(lines(), headers=ai_headers(
        answer.message_id, svc.settings.model_display_name or answer.model))


@router.get("/messages/{message_id}/speech",
            responses={200: {"content": {"audio/mpeg": {}}}, 204: {}})
async def speech(
    message_id: MessageId,
    caller: Caller,
    svc: Svc,
    sentence: Annotated[int | None, Query(ge=0, le=10_000)] = None,
) -> Response:
    text, ended = await _answer_text(svc, message_id, caller.user_id)
    parts = sentences(text)
    if not ended and parts and not _ends_sentence(text):
        parts = parts[:-1]  # the last one is still being written
    headers = {"X-Mpchat-Sentences": str(len(parts))} if ended else {}
    if sentence is None:
        if not ended:
            raise NotReady(retry_after=1)
        spoken = speakable(text)
    elif sentence < len(parts):
        spoken = parts[sentence]
    elif not ended:
        raise NotReady(retry_after=1)
    else:
        spoken = ""
    if not spoken:
        return Response(status_code=204, headers=headers)
    audio = await audio_client(svc).speak(spoken)
    return Response(audio.audio, media_type=audio.content_type,
                    headers=headers | {"Cache-Control": "private, max-age=3600"})


async def _answer_text(svc: Services, message_id: str, user_id: str) -> tuple[str, bool]:
    """The answer's text so far and whether it ended; `NotFound`, `Retracted`."""
    live = svc.chat.answers.find(message_id, user_id)
    if live is not None and not live.ended:
        if live.cancel_reason == "retracted" or live.status == "retracted":
            raise Retracted()
        return "".join(live.released), False
    row = await stored.read_answer(svc.engine, svc.keyring, message_id=message_id,
                                   user_id=user_id)
    if row is None:  # unknown, a question, or another user's
        raise NotFound()
    if row.status == "retracted":
        raise Retracted()
    return row.content, row.status != "streaming"


def _ends_sentence(text: str) -> bool:
    return text.rstrip(" \t").endswith(("。", "！", "？", "!", "?", "；", ";", "…", "\n"))
