"""Server-sent events as OpenAI-compatible providers send them: bytes in, ``data:`` payloads out.

Each byte is copied a bounded number of times, whatever the chunking: a line that arrives in
many pieces is kept as a list of pieces and joined once, when its newline arrives (joining
``pending + received`` on every read made a line without a newline cost quadratic time).
A line longer than ``max_line`` bytes is refused as soon as it is known to be that long.

Lines end with LF or CRLF. Each ``data:`` line is one payload: no OpenAI-compatible provider
splits a chunk over several ``data:`` lines, and dispatching per line (rather than at the blank
line that ends an event) keeps a server that omits blank lines working. Comments (``:``),
blank lines and the other fields (``event:``, ``id:``, ``retry:``) carry nothing for us.
"""

from __future__ import annotations

from mpchat.providers.types import ProviderInvalid

__all__ = ["DEFAULT_MAX_LINE_BYTES", "LineSplitter", "sse_data"]

DEFAULT_MAX_LINE_BYTES = 1 << 20  # 1 MiB: a chunk is a few hundred bytes; this is no answer


class LineSplitter:
    """Complete lines from a byte stream, without their line ends."""

    __slots__ = ("_max", "_parts", "_size")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._max = max_line
        self._parts: list[bytes] = []  # the unfinished line, in the pieces it came in
        self._size = 0

    @property
    def pending(self) -> int:
        """Bytes of the unfinished line held."""
        return self._size

    def feed(self, data: bytes) -> list[bytes]:
        end = data.rfind(b"\n")
        if end < 0:
            self._size += len(data)
            if self._size > self._max:
                raise ProviderInvalid("provider sent a line over the size limit")
            if data:
                self._parts.append(data)
            return []
        lines = data[:end].split(b"\n")
        if self._parts:
            self._parts.append(lines[0])
            lines[0] = b"".join(self._parts)
        # Only a batch that holds max_line bytes can hold a line that long: the check costs
        # nothing on the usual small reads.
        if self._size + end > self._max and max(map(len, lines)) > self._max:
            raise ProviderInvalid("provider sent a line over the size limit")
        rest = data[end + 1 :]
        self._parts = [rest] if rest else []
        self._size = len(rest)
        if self._size > self._max:
            raise ProviderInvalid("provider sent a line over the size limit")
        return lines

    def flush(self) -> bytes:
        """The unfinished line at the end of the stream (a last line without its newline)."""
        line = b"".join(self._parts)
        self._parts, self._size = [], 0
        return line


def sse_data(line: bytes) -> bytes | None:
    """The payload of a ``data:`` line (one optional space removed); None for any other line."""
    if not line.startswith(b"data:"):
        return None
    if line.endswith(b"\r"):
        line = line[:-1]
    return line[5:].strip(b" \t")
