"""The storage tests' transaction runner, beside the migrated engine of tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.transactions import Transactions


@pytest.fixture
async def tx(engine: AsyncEngine) -> AsyncIterator[Transactions]:
    """`Transactions` on the test's engine, closed before the engine is disposed."""
    transactions = Transactions(engine)
    yield transactions
    await transactions.aclose()
