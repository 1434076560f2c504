"""Fixtures for the security tests: a migrated engine on each backend, and two keys."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from mpchat.storage.crypto import generate_key_spec


@pytest.fixture
def key1() -> str:
    return generate_key_spec("k1")


@pytest.fixture
def key2() -> str:
    return generate_key_spec("k2")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`configure_logging` replaces the root handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    alembic = logging.getLogger("alembic").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(alembic)
