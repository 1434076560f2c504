"""Calling the providers: choose one, wait for its slot, retry before the first delta, fail over.

A *route* is a provider with the controls that guard it: its gate (in-flight bound and
queue), its budget (requests and tokens per minute, and the fleet-wide pause after a 429)
and its circuit breaker. Routes are tried by priority (1 first), weighted at random within
a priority; a route whose breaker is open or whose budget says "not now" is passed over.

Retries follow `RetryPolicy` and stop at the provider's first event (text or reasoning):
once it has reached the client, a failure is final (the answer is stored as truncated). A
failed attempt moves at once to another route when one is available, and waits the backoff
(or the provider's ``Retry-After``) otherwise.

A route that cannot take a request now is passed over: its breaker is open or the fleet is
paused by the provider's 429 (the route is *down*), or its budget is short or its queue is
full (it is *busy*). When no route can take it, the answer is `ServiceUnavailable` if every
route is down, else `Busy`. A budget share taken for a request that never reached the
provider is given back.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from mpchat.errors import Busy, MpchatError, ServiceUnavailable, UpstreamError, UpstreamTimeout
from mpchat.limits import (
    BreakerState,
    BudgetReservation,
    CircuitBreaker,
    Lease,
    ProviderBudget,
    ProviderPaused,
    UpstreamGate,
)
from mpchat.metrics import Metrics
from mpchat.providers.retry import RetryPolicy
from mpchat.providers.types import (
    Delta,
    Finish,
    Message,
    Options,
    Provider,
    ProviderError,
    ProviderStatus,
    ProviderTimeout,
    Reasoning,
    Retryable,
    ToolCall,
)

__all__ = ["Admission", "Queued", "Route", "Served", "Upstream", "UpstreamEvent"]

log = logging.getLogger("mpchat.upstream")


@dataclass(frozen=True, slots=True)
class Queued:
    position: int


@dataclass(frozen=True, slots=True)
class Served:
    """The route that answers (sent once, before its first event)."""

    provider: str
    model: str
    called: float = 0.0  # when the provider was called, after queue and retries (monotonic)
    first_token: float = 0.0  # when its first event came (monotonic)


UpstreamEvent = Queued | Served | Delta | Reasoning | ToolCall | Finish


@dataclass(slots=True)
class Route:
    provider: Provider
    gate: UpstreamGate
    budget: ProviderBudget
    breaker: CircuitBreaker
    priority: int = 1
    weight: float = 1.0

    @property
    def name(self) -> str:
        return self.provider.name

    def serves(self, model: str | None) -> bool:
        return model is None or model in self.provider.models

    async def aclose(self) -> None:
        await self.gate.aclose()
        await self.budget.aclose()
        await self.provider.aclose()


@dataclass(slots=True)
class Admission:
    """A route chosen for one attempt, with its place at the gate and its budget share."""

    route: Route
    lease: Lease
    reservation: BudgetReservation | None
    reached: bool = False  # whether the request was sent to the provider
    probe: bool = False  # whether it holds the half-open breaker's one probe

    async def release(self) -> None:
        """Free the slot and settle the budget share: given back if never used; kept at
        its estimate if the provider was called and no usage was reported. A breaker's
        probe that was never sent (a rejected input, a client gone while queued) is given
        back too, so the next request can probe at once."""
        if self.probe and not self.reached:
            self.probe = False
            self.route.breaker.forget_probe()
        await self.lease.release()
        reservation = self.reservation
        if reservation is not None and not reservation.settled:
            if self.reached:
                await reservation.commit(reservation.tokens_estimate)
            else:
                await reservation.refund()


class Upstream:
    def __init__(
        self,
        routes: Sequence[Route],
        *,
        retry: RetryPolicy,
        metrics: Metrics,
        sleep: Callable[[float], Awaitable[None]],
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not routes:
            raise ValueError("at least one provider route is needed")
        self.routes = list(routes)
        self.retry = retry
        self.metrics = metrics
        self.sleep = sleep
        self._rand = rand

    @property
    def model(self) -> str:
        return self.routes[0].provider.model

    def models(self) -> list[str]:
        """Every model some route serves, each once, in the routes' order."""
        return list(dict.fromkeys(m for r in self.routes for m in r.provider.models))

    def serves(self, model: str, *, tools: bool = False) -> bool:
        """Whether some route serves ``model`` (and takes ``tools``, when asked)."""
        return any(r.serves(model) and (r.provider.tools or not tools) for r in self.routes)

    async def aclose(self) -> None:
        for route in self.routes:
            await route.aclose()

    def _ordered(self) -> list[Route]:
        """Routes by priority; within one priority, a weighted random order."""
        if len(self.routes) == 1:
            return self.routes
        keyed = [
            # Efraimidis-Spirakis: sorting by u^(1/w) draws a weighted order in one pass.
            (r.priority, -(self._rand() ** (1.0 / r.weight)), i, r)
            for i, r in enumerate(self.routes)
        ]
        return [r for *_, r in sorted(keyed)]

    async def admit(
        self,
        user_key: str,
        *,
        tokens: int,
        exclude: Route | None = None,
        model: str | None = None,
    ) -> Admission:
        """A place at the best available route's gate (among those serving ``model``).

        Raises `Busy` when the routes that are up cannot take it now, `ServiceUnavailable`
        when every route is down.
        """
        soonest: float | None = None  # seconds until the first refusing route may take it
        busy = False

        def sooner(seconds: float) -> float:
            return seconds if soonest is None else min(soonest, seconds)

        for route in self._ordered():
            if route is exclude or not route.serves(model):
                continue
            breaker = route.breaker
            if breaker.state is BreakerState.OPEN:
                # Down until its cool-down ends: then a probe may go, maybe before a pause ends.
                soonest = sooner(breaker.retry_after())
                continue
            budget = route.budget
            reservation = None
            try:
                if budget.requests or budget.tokens:
                    # One step checks the fleet-wide pause and takes the budget share.
                    reservation = await budget.reserve(tokens, max_wait=0)
                elif (paused := await budget.paused_for()) > 0:
                    raise ProviderPaused(retry_after=paused)
                lease = await route.gate.reserve(user_key)  # Busy when its queue is full
            except ProviderPaused as exc:  # down until the provider's pause ends
                soonest = sooner(exc.retry_after or 1.0)
                continue
            except Busy as exc:
                if reservation is not None:
                    await reservation.refund()
                busy = True
                soonest = sooner(exc.retry_after or 1.0)
                continue
            # The breaker is asked last: half-open, ``allow`` hands out its one probe, which
            # must go to a request that will be sent, not to one a pause or a full queue stops.
            probe = breaker.state is BreakerState.HALF_OPEN
            if not breaker.allow():
                await lease.release()
                if reservation is not None:
                    await reservation.refund()
                continue
            return Admission(route, lease, reservation, probe=probe)
        if exclude is not None:
            raise _NoAlternative()
        if busy:
            raise Busy(retry_after=soonest)
        raise ServiceUnavailable(
            "服务暂时不可用，请稍后再试",
            retry_after=soonest if soonest is not None else self._breaker_wait(),
        )

    def _breaker_wait(self) -> float:
        return max(1.0, min(r.breaker.retry_after() for r in self.routes))

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        user_key: str,
        tokens: int,
        admission: Admission,
        max_tokens: int | None = None,
        options: Options | None = None,
    ) -> AsyncGenerator[UpstreamEvent]:
        """Queue positions, then the answer's events; raises `MpchatError` on failure.

        ``options.model`` (if any) was admitted for: every route tried serves it.
        """
        attempt = 0
        model = options.model if options is not None else None
        current: Admission | None = admission
        try:
            while True:
                attempt += 1
                if current is None:
                    current = await self.admit(user_key, tokens=tokens, model=model)
                route = current.route
                async for position in current.lease.wait():
                    yield Queued(position)
                stream = route.provider.stream(messages, max_tokens=max_tokens, options=options)
                current.reached = True
                called = time.monotonic()
                try:
                    first = await anext(stream)
                except Retryable as exc:
                    await stream.aclose()
                    current = await self._after_failure(current, exc, attempt, user_key,
                                                        tokens, model)
                    continue
                except ProviderError as exc:
                    await stream.aclose()
                    self._count(route, "rejected")
                    log.warning("provider %s refused the request: %s", route.name, exc)
                    raise UpstreamError() from None
                got = time.monotonic()
                self._count(route, "ok")
                route.breaker.record_success()
                usage = None
                try:
                    yield Served(route.name, model or route.provider.model, called, got)
                    yield first
                    async for event in stream:
                        if isinstance(event, Finish):
                            usage = event.usage
                        yield event
                except ProviderError as exc:
                    # Text already reached the client: never retried.
                    route.breaker.record_failure()
                    log.warning("provider %s broke mid-answer: %s", route.name, exc)
                    raise _client_error(exc) from None
                finally:
                    await stream.aclose()
                if current.reservation is not None:
                    spent = usage.prompt_tokens + usage.completion_tokens if usage else tokens
                    await current.reservation.commit(spent)
                return
        finally:
            if current is not None:
                await current.release()

    async def _after_failure(
        self,
        failed: Admission,
        exc: Retryable,
        attempt: int,
        user_key: str,
        tokens: int,
        model: str | None,
    ) -> Admission:
        """Record the failure; the next attempt's admission, or the final error."""
        route = failed.route
        await failed.release()
        self._count(route, "retryable")
        if isinstance(exc, ProviderStatus) and exc.status == 429 and exc.retry_after:
            # Every instance holds off; capped like our own wait, so one odd header
            # cannot take a provider out for an hour. The pause is the whole answer to
            # such a 429: counted by the breaker too, a burst of them would open it and
            # keep a healthy provider out for the breaker's cool-down, not for the
            # provider's Retry-After.
            await route.budget.pause(min(exc.retry_after, self.retry.retry_after_cap))
        else:
            route.breaker.record_failure()
        log.warning("provider %s attempt %d failed: %s", route.name, attempt, exc)
        if attempt >= self.retry.attempts:
            raise _client_error(exc)
        try:
            return await self.admit(user_key, tokens=tokens, exclude=route, model=model)
        except (_NoAlternative, Busy, ServiceUnavailable):
            pass  # nothing else can take it now: wait, then try every route again
        await self.sleep(self.retry.wait(attempt, exc.retry_after))
        return await self.admit(user_key, tokens=tokens, model=model)

    def _count(self, route: Route, outcome: str) -> None:
        self.metrics.upstream_attempts.labels(route.name, outcome).inc()


class _NoAlternative(MpchatError):
    """No route other than the excluded one can take the request now."""


def _client_error(exc: ProviderError) -> MpchatError:
    return UpstreamTimeout() if isinstance(exc, ProviderTimeout) else UpstreamError()
