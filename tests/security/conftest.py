"""Fixtures for the security tests: a migrated engine on each backend, and two keys."""

from __future__ import annotations

import pytest

from mpchat.storage.crypto import generate_key_spec


@pytest.fixture
def key1() -> str:
    return generate_key_spec("k1")


@pytest.fixture
def key2() -> str:
    return generate_key_spec("k2")

