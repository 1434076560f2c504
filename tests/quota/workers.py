"""A separate process reserving against the shared database (the multi-instance test)."""

from __future__ import annotations

import asyncio
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any


def reserve_many(url: str, prefix: str, count: int, ready: Queue[Any], go: Event,
                 done: Queue[Any]) -> None:
    """Make ``count`` reservations at once, when ``go`` is set; put (granted, refused)."""
    asyncio.run(_reserve_many(url, prefix, count, ready, go, done))


async def _reserve_many(url: str, prefix: str, count: int, ready: Queue[Any], go: Event,
                        done: Queue[Any]) -> None:
    from mpchat.errors import QuotaExceeded
    from mpchat.quota import QuotaConfig, Quotas
    from mpchat.storage.engine import create_engine
    from mpchat.storage.transactions import Transactions

    engine = create_engine(url)
    transactions = Transactions(engine)
    quotas = Quotas(transactions, QuotaConfig.model_validate({"free_units": 0}))
    async with engine.connect():  # a warm pool, so the processes start together
        pass
    ready.put(prefix)
    await asyncio.to_thread(go.wait, 30)

    # Within the engine's pool (30 on PostgreSQL): under a loaded machine, more would wait
    # for a connection past the pool's timeout, which tests the pool, not the quotas.
    slots = asyncio.Semaphore(20)

    async def one(n: int) -> bool:
        try:
            async with slots:
                await quotas.reserve(user_id="u", model="m", prompt_tokens=1,
                                     max_completion_tokens=1, key=f"{prefix}-{n}")
        except QuotaExceeded:
            return False
        return True

    outcomes = await asyncio.gather(*(one(n) for n in range(count)))
    await transactions.aclose()
    await engine.dispose()
    done.put((sum(outcomes), count - sum(outcomes)))
