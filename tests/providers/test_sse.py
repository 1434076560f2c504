"""The SSE line reader: lines whatever the chunking, CRLF, a bound on line length, linear cost."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpchat.providers.sse import LineSplitter, sse_data
from mpchat.providers.types import ProviderInvalid


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=12))
def test_lines_do_not_depend_on_how_the_bytes_arrive(data: bytes, cuts: list[int]):
    splitter = LineSplitter(max_line=1000)
    got: list[bytes] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        got += splitter.feed(data[start:max(start, cut)])
        start = max(start, cut)
    got.append(splitter.flush())
    assert got == data.split(b"\n")


def test_a_line_over_the_limit_is_invalid_as_soon_as_it_is_known():
    splitter = LineSplitter(max_line=10)
    assert splitter.feed(b"data: 1234") == []
    with pytest.raises(ProviderInvalid):
        splitter.feed(b"5")
    with pytest.raises(ProviderInvalid):
        LineSplitter(max_line=10).feed(b"ok\n" + b"x" * 11 + b"\n")
    assert LineSplitter(max_line=10).feed(b"x" * 10 + b"\n") == [b"x" * 10]


def test_a_line_in_many_pieces_costs_linear_time():
    # 16 MiB in 1 KiB pieces: joining pending + received on every read would copy ~128 GiB.
    piece = b"x" * 1024
    splitter = LineSplitter(max_line=32 << 20)
    started = time.process_time()
    for _ in range(16 * 1024):
        assert splitter.feed(piece) == []
    lines = splitter.feed(b"\n")
    assert len(lines[0]) == 16 << 20
    assert time.process_time() - started < 2.0


@pytest.mark.parametrize(("line", "payload"), [
    (b"data: {}", b"{}"),
    (b"data:{}", b"{}"),
    (b"data: {}\r", b"{}"),
    (b"data: [DONE]", b"[DONE]"),
    (b": keep-alive", None),
    (b"event: message", None),
    (b"id: 7", None),
    (b"", None),
])
def test_sse_data(line: bytes, payload: bytes | None):
    assert sse_data(line) == payload
