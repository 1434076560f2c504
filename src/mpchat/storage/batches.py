"""Rows written off the hot path: a bounded queue and one task that writes them in batches.

Used for the records a request leaves behind but must never wait for: the content safety
audit (`mpchat.storage.audit`) and the OpenAI-compatible surface's request log
(`mpchat.storage.request_log`). A failed write is logged and dropped, never raised into
the request that recorded it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Literal, TypeVar

__all__ = ["BatchWriter"]

T = TypeVar("T")


class BatchWriter(Generic[T]):
    """Queues items and writes them with ``write`` in batches, from one background task.

    ``record`` never blocks and never raises: when the queue is full (the database is far
    behind) items are dropped and counted.
    """

    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[None]],
        *,
        what: str,
        max_queue: int = 10_000,
        batch: int = 200,
        linger: float = 0.0,
    ) -> None:
        self._write = write
        self._what = what  # for the logs: "audit events", "request log rows"
        self._log = logging.getLogger(f"mpchat.{what.split()[0]}")
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=max_queue)
        self._batch = batch
        # Seconds to wait after the first item for more: one transaction for many rows where
        # a row comes with every answer (usage records), instead of one per answer.
        self._linger = linger
        self._hurry = asyncio.Event()  # set by flush and aclose: no lingering then
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0  # lost to a full queue or a failed write
        self.written = 0

    @property
    def state(self) -> Literal["idle", "running", "closed"]:
        if self._closed:
            return "closed"
        return "running" if self._task is not None and not self._task.done() else "idle"

    def record(self, item: T) -> None:
        if self._closed:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                self._log.warning("%s queue full: %d dropped so far", self._what, self.dropped)
            return
        if self._task is None or self._task.done():
            # Started lazily, inside the running loop of the first request that needs it.
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self) -> None:
        """Until every item recorded so far has been written (or dropped)."""
        self._hurry.set()
        try:
            await self._queue.join()
        finally:
            if not self._closed:
                self._hurry.clear()

    async def aclose(self) -> None:
        """Write what is queued (at once, without lingering), then stop."""
        self._closed = True
        self._hurry.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout=5)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            items = [await self._queue.get()]
            if self._linger and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):  # gather what comes meanwhile
                    await asyncio.wait_for(self._hurry.wait(), self._linger)
            while len(items) < self._batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                await self._write(items)
                self.written += len(items)
            except Exception:
                self.dropped += len(items)
                self._log.exception("could not write %d %s", len(items), self._what)
            finally:
                for _ in items:
                    self._queue.task_done()
