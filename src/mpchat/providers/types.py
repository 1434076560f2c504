"""What a provider streams, and how a provider call can fail.

    ProviderError
    ├── Retryable                 worth another attempt (before the first delta only)
    │   ├── ProviderStatus        429 or 5xx (``retry_after`` from the provider, if any)
    │   ├── ProviderTimeout       connect, first token, chunk gap or total deadline passed
    │   ├── ProviderConnectionError
    │   └── ProviderInvalid       an answer that is not one: a chunk the dialect does not allow,
    │                             an oversized line, a body that is no answer at all
    └── ProviderRejected          another 4xx: the request itself is wrong, never retried
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Delta",
    "Finish",
    "Provider",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderInvalid",
    "ProviderRejected",
    "ProviderStatus",
    "ProviderTimeout",
    "Reasoning",
    "Retryable",
    "StreamEvent",
    "Usage",
]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of a reasoning model's thinking: progress, never part of the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str
    usage: Usage | None = None


StreamEvent = Delta | Reasoning | Finish


class Provider(Protocol):
    """An OpenAI-compatible chat model, streamed."""

    name: str
    model: str

    def stream(
        self, messages: Sequence[Mapping[str, str]], *, max_tokens: int | None = None
    ) -> AsyncGenerator[StreamEvent]:
        """Deltas (and reasoning), then one `Finish`; closing the iterator cancels the request."""
        ...

    async def aclose(self) -> None: ...


class ProviderError(Exception):
    """A provider call failed. The text is for logs only: never shown to users."""


class Retryable(ProviderError):
    retry_after: float | None = None


class ProviderStatus(Retryable):
    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"provider answered HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class ProviderTimeout(Retryable):
    pass


class ProviderConnectionError(Retryable):
    pass


class ProviderInvalid(Retryable):
    pass


class ProviderRejected(ProviderError):
    def __init__(self, status: int) -> None:
        super().__init__(f"provider rejected the request with HTTP {status}")
        self.status = status
