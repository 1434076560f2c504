"""Run an async generator ahead of its consumer, in a task of its own.

Used to start the provider call while the input is still being checked: events pile up
in a queue (a handful: `queued` positions and the first deltas) until the consumer,
cleared to stream, reads them. Closing it cancels the task, and with it the provider call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Generic, TypeVar

import anyio

__all__ = ["Prefetch"]

T = TypeVar("T")
_END = object()


class Prefetch(Generic[T]):
    def __init__(self, source: AsyncGenerator[T]) -> None:
        self._source = source
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            async for item in self._source:
                self._queue.put_nowait(item)
        except Exception as exc:  # handed to the consumer, raised where it reads
            self._queue.put_nowait(_Raised(exc))
        else:
            self._queue.put_nowait(_END)

    def __aiter__(self) -> Prefetch[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # stays exhausted
            raise StopAsyncIteration
        if isinstance(item, _Raised):
            raise item.exc
        return item  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Stop the source (cancelling its pending I/O) and wait until it has stopped."""
        if not self._task.done():
            self._task.cancel()
        # Shielded: even a request being torn down must wait for the source to stop
        # before closing it (closing a running generator is an error).
        with anyio.CancelScope(shield=True), contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._source.aclose()


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
