"""A voice recording checked before anything is sent: size, format, duration where known.

The formats are those ``wx.getRecorderManager`` records: mp3, aac, wav, m4a and pcm, named
by the request's ``Content-Type``. A body must look like what its type says (magic bytes:
ID3 or an MPEG frame, an ADTS header, RIFF/WAVE, an ``ftyp`` box); raw PCM (16-bit mono,
``sample_rate`` from the query, default 16 kHz) is wrapped in a WAV header, because the
transcription endpoints do not take headerless audio. Durations are checked where the
bytes say them (wav, pcm); for the compressed formats the size bound stands in for them.
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass

from mpchat.errors import AudioTooLarge, EmptyAudio, InvalidAudio, UnsupportedAudio

__all__ = ["FORMATS", "MAX_SECONDS", "Recording", "check_recording", "wav_from_pcm"]

# Content-Type -> (format, file name extension sent to the provider, its Content-Type).
FORMATS: dict[str, tuple[str, str, str]] = {
    "audio/mpeg": ("mp3", "mp3", "audio/mpeg"),
    "audio/mp3": ("mp3", "mp3", "audio/mpeg"),
    "audio/aac": ("aac", "aac", "audio/aac"),
    "audio/wav": ("wav", "wav", "audio/wav"),
    "audio/x-wav": ("wav", "wav", "audio/wav"),
    "audio/wave": ("wav", "wav", "audio/wav"),
    "audio/x-m4a": ("m4a", "m4a", "audio/mp4"),
    "audio/m4a": ("m4a", "m4a", "audio/mp4"),
    "audio/mp4": ("m4a", "m4a", "audio/mp4"),
    "audio/pcm": ("pcm", "wav", "audio/wav"),
}
MAX_SECONDS = 120  # wx.getRecorderManager records at most 10 minutes; a question is shorter
_MIN_BYTES = 64  # below this no format holds a second of speech (nor a valid header + data)


@dataclass(frozen=True, slots=True)
class Recording:
    audio: bytes  # what goes to the provider (PCM wrapped in WAV)
    format: str  # mp3, aac, wav, m4a, pcm
    filename: str
    content_type: str
    seconds: float | None  # when the bytes say it


def check_recording(body: bytes, content_type: str, *, max_bytes: int,
                    sample_rate: int = 16000) -> Recording:
    """The recording to transcribe; `MpchatError` (400, with its code) when it is not one."""
    kind = FORMATS.get(content_type.split(";", 1)[0].strip().lower())
    if kind is None:
        raise UnsupportedAudio()
    if len(body) > max_bytes:
        raise AudioTooLarge(f"录音不能超过 {max_bytes // 1024} KB")
    if not body:
        raise EmptyAudio("录音为空")
    fmt, ext, sent_type = kind
    seconds: float | None = None
    if fmt == "pcm":
        if len(body) % 2:
            raise InvalidAudio("PCM 录音应为 16 位采样")
        seconds = len(body) / 2 / sample_rate
        body = wav_from_pcm(body, sample_rate)
    elif fmt == "wav":
        seconds = _wav_seconds(body)
    elif len(body) < _MIN_BYTES or not _MAGIC[fmt](body):
        raise InvalidAudio()
    if seconds is not None:
        if seconds < 0.1:
            raise EmptyAudio("录音太短")
        if seconds > MAX_SECONDS:
            raise AudioTooLarge(f"录音不能超过 {MAX_SECONDS} 秒")
    return Recording(body, fmt, f"recording.{ext}", sent_type, seconds)


def _mp3(b: bytes) -> bool:
    return b.startswith(b"ID3") or (b[0] == 0xFF and b[1] & 0xE0 == 0xE0)


def _aac(b: bytes) -> bool:
    return (b[0] == 0xFF and b[1] & 0xF6 == 0xF0) or b.startswith(b"ADIF")


def _m4a(b: bytes) -> bool:
    return b[4:8] == b"ftyp"


_MAGIC = {"mp3": _mp3, "aac": _aac, "m4a": _m4a}


def _wav_seconds(body: bytes) -> float:
    if body[:4] != b"RIFF" or body[8:12] != b"WAVE":
        raise InvalidAudio()
    try:
        with wave.open(io.BytesIO(body)) as w:
            frames, rate = w.getnframes(), w.getframerate()
            data = w.readframes(frames)
    except (wave.Error, EOFError, struct.error):
        raise InvalidAudio() from None
    if not rate:
        raise InvalidAudio()
    if not data:
        raise EmptyAudio("录音为空")
    return float(frames) / float(rate)


def wav_from_pcm(pcm: bytes, rate: int) -> bytes:
    """16-bit mono PCM in a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()
