"""The service's answers: it owns their tasks, finds them, stops them, and settles orphans.

`Answers` is made once, in the lifespan (`async with Answers(...)`). Every answer's task
belongs to its task group, never to a request: a request only follows an answer's events
(`Answer.lines_after`). It also

* keeps ended answers' events for resume for ``resume_ttl`` seconds (at most ``max_kept``
  of them, about 2-4 KiB each; older ones are served by the relay, or from storage as a
  ``snapshot``),
* writes the text so far of all its answers at once every ``save_interval`` (so a crash
  loses at most that much), renews the storage claim (``lease``) of the answers it
  produces, and settles the answers of instances that stopped renewing theirs (crashed:
  ``settle_stale``), at start-up and then periodically,
* on close, lets answers under way finish for ``shutdown_timeout`` seconds, then stops the
  rest, which store what they have.

With a relay (Redis), events are mirrored for the other instances and stop requests (the
cancel endpoint, a user's data deleted) reach the instance that produces the answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from mpchat.chat.answer import Answer, Event
from mpchat.storage import answers as stored
from mpchat.storage.crypto import Keyring
from mpchat.storage.transactions import Transactions

__all__ = ["Answers"]

log = logging.getLogger("mpchat.chat")


class Answers:
    def __init__(
        self,
        *,
        transactions: Transactions,
        keyring: Keyring,
        owner: str,
        lease: float,
        save_interval: float,
        resume_ttl: float,
        shutdown_timeout: float,
        ping_interval: float = 5.0,
        relay: Any | None = None,
        max_kept: int = 2_000,
        clock: Callable[[], float] | None = None,
        after_sweep: Callable[[list[stored.Settled]], Awaitable[None]] | None = None,
    ) -> None:
        self._tx = transactions
        self._keyring = keyring
        self.owner = owner
        self.lease = lease
        self.save_interval = save_interval
        self.resume_ttl = resume_ttl
        self.shutdown_timeout = shutdown_timeout
        self.ping_interval = ping_interval
        self.relay = relay
        self.max_kept = max_kept
        # What else the orphans held (their quota reservations), settled after each sweep.
        self._after_sweep = after_sweep
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._live: dict[str, Answer] = {}
        self._ended: collections.OrderedDict[str, Answer] = collections.OrderedDict()
        self._idle = asyncio.Event()
        self._idle.set()
        self._group: asyncio.TaskGroup | None = None
        self._chores: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Answers:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        if self.relay is not None:
            self.relay.on_stop(self._on_stop)
        self._chores = [self._group.create_task(self._keep_leases()),
                        self._group.create_task(self._save_text()),
                        self._group.create_task(self._ping_silent()),
                        self._group.create_task(self._settle_orphans())]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.shutdown_timeout):
                await self._idle.wait()
        for answer in list(self._live.values()):
            answer.cancel("shutdown")
        for chore in self._chores:
            chore.cancel()
        await self._group.__aexit__(exc_type, exc, tb)
        self._group = None

    async def wait_idle(self) -> None:
        """Until every answer under way has ended and been stored (tests, shutdown)."""
        await self._idle.wait()

    # -- answers ---------------------------------------------------------------------------

    def new(self, **fields: Any) -> Answer:
        """An answer of the conversations (mirrored to the relay), or a stateless one
        (``stored=False``: no row, no resume, nothing mirrored)."""
        mirror = self.relay is not None and fields.get("stored", True)
        return Answer(on_publish=self._mirror if mirror else None, **fields)

    def launch(self, answer: Answer, run: Callable[[], Any]) -> None:
        """Run ``run()`` (the answer's producer) as a task of the service."""
        if self._group is None:
            raise RuntimeError("answers are not open")
        self._forget_old()
        self._live[answer.message_id] = answer
        self._idle.clear()
        answer.task = self._group.create_task(self._run(answer, run))

    async def _run(self, answer: Answer, run: Callable[[], Any]) -> None:
        try:
            await run()
        except Exception:
            # Never let one answer's bug end the task group, and with it every other answer.
            log.exception("answer %s: its producer failed", answer.message_id)
        finally:
            answer.released = []  # only the saver needed the pieces; the lines stay
            self._live.pop(answer.message_id, None)
            if answer.stored:  # a stateless answer has nothing to resume
                if self.relay is not None:
                    self.relay.end(answer.message_id)
                self._ended[answer.message_id] = answer
            if not self._live:
                self._idle.set()

    def find(self, message_id: str, user_id: str) -> Answer | None:
        """The user's answer, live or recently ended on this instance."""
        answer = self._live.get(message_id) or self._ended.get(message_id)
        if answer is None or answer.user_id != user_id or not answer.stored:
            return None
        return answer

    def live_of(self, user_id: str) -> list[Answer]:
        return [a for a in self._live.values() if a.user_id == user_id]

    async def stop(self, *, message_id: str | None = None, user_id: str | None = None,
                   reason: str) -> None:
        """Stop an answer, or all of a user's, here and (with a relay) everywhere."""
        self._stop_here(message_id, user_id, reason)
        if self.relay is not None:
            await self.relay.stop(message_id=message_id, user_id=user_id)

    def _stop_here(self, message_id: str | None, user_id: str | None, reason: str) -> None:
        if message_id is not None and (answer := self._live.get(message_id)) is not None:
            answer.cancel(reason)
        if user_id is not None:
            for answer in self.live_of(user_id):
                answer.cancel(reason)

    def _on_stop(self, message_id: str | None, user_id: str | None) -> None:
        # Another instance was asked: a user stop (by message) or data deletion (by user).
        self._stop_here(message_id, user_id, "cancelled" if user_id is None else "deleted")

    def _mirror(self, answer: Answer, event: Event) -> None:
        assert self.relay is not None
        self.relay.publish(answer.message_id, answer.user_id, (event,))

    def _forget_old(self) -> None:
        horizon = self._clock() - self.resume_ttl
        ended = self._ended
        while ended:
            oldest = next(iter(ended.values()))
            if len(ended) <= self.max_kept and (oldest.ended_at or 0) > horizon:
                break
            ended.popitem(last=False)

    # -- storage claims --------------------------------------------------------------------

    async def _keep_leases(self) -> None:
        """Renew this instance's claim on its answers' rows, a third of the lease at a time."""
        while True:
            await asyncio.sleep(self.lease / 3)
            if not self._live:
                continue
            until = datetime.now(UTC) + timedelta(seconds=self.lease)
            try:
                await stored.renew_leases(self._tx.engine, owner=self.owner, until=until)
            except Exception:
                log.warning("could not renew the answers' leases", exc_info=True)

    async def _save_text(self) -> None:
        """Every interval, the text so far of every answer that grew, in one transaction.

        One write for all answers instead of one per answer: 1,000 answers under way cost
        one transaction a second, not a thousand.
        """
        while True:
            await asyncio.sleep(self.save_interval)
            grown = [a for a in self._live.values()
                     if a.stored and len(a.released) > a.saved and not a.settling]
            if not grown:
                continue
            items = [stored.Progress(a.message_id, a.user_id, "".join(a.released),
                                     a.next_seq - 1) for a in grown]
            counts = [len(a.released) for a in grown]
            until = datetime.now(UTC) + timedelta(seconds=self.lease)
            try:
                gone = await stored.save_progress(self._tx, self._keyring, items,
                                                  lease_until=until)
            except Exception:
                log.warning("could not save the answers' text so far", exc_info=True)
                continue
            for answer, count in zip(grown, counts, strict=True):
                answer.saved = count
                if answer.message_id in gone:  # deleted meanwhile (maybe on another instance)
                    answer.cancel("deleted")

    async def _ping_silent(self) -> None:
        """Answers that published nothing for an interval get a ping for their followers.

        One timer for the instance instead of one per follower and wait: a client learns
        within two intervals that the answer is alive (a retry's backoff, a slow first token).
        """
        heard: dict[str, int] = {}
        while True:
            await asyncio.sleep(self.ping_interval)
            now_heard = {}
            for message_id, answer in self._live.items():
                count = len(answer.lines)
                if heard.get(message_id) == count:
                    answer.ping()
                now_heard[message_id] = count
            heard = now_heard

    async def _settle_orphans(self) -> None:
        """Answers left ``streaming`` by a crashed instance: at start, then every half lease."""
        while True:
            try:
                settled = await stored.settle_stale(self._tx, self._keyring)
                if settled:
                    log.warning("settled %d answers left by a stopped instance", len(settled))
                if self._after_sweep is not None:
                    await self._after_sweep(settled)
            except Exception:
                log.warning("could not settle orphaned answers", exc_info=True)
            await asyncio.sleep(self.lease / 2)
