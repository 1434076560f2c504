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
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Delta",
    "Finish",
    "Message",
    "Options",
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
    "ToolCall",
    "Usage",
]

Message = Mapping[str, Any]
"""A chat message as the provider takes it (``role``, ``content``, maybe tool fields)."""


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
class ToolCall:
    """A piece of a tool call the model makes: the first piece of one ``index`` carries its
    ``id`` and ``name``, the arguments (JSON text) may come in several pieces."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Options:
    """What one request asks of the provider beyond its messages.

    ``model`` is one the provider serves (None: its default); ``params`` are passed through
    as they are (temperature, top_p, stop, user, tools, ...): the caller validated them.
    ``stream=False`` asks for the answer whole, as one JSON body, where the provider's
    dialect allows it (a caller that does not stream gains nothing from the pieces); the
    events are the same either way, the whole text then arriving as one `Delta`. A provider
    that cannot answer so streams anyway.
    """

    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = True


StreamEvent = Delta | Reasoning | ToolCall | Finish


class Provider(Protocol):
    """An OpenAI-compatible chat model, streamed."""

    name: str
    model: str  # its default model
    models: tuple[str, ...]  # every model it serves, the default first
    tools: bool  # whether it takes ``tools`` (function calling)

    def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        options: Options | None = None,
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
