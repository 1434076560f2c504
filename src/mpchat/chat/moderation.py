"""What the chat pipeline needs from content safety, as a narrow interface.

`mpchat.safety.moderator.Moderator` implements it with the local word filter and WeChat's
content security; `NoModeration` lets everything through (tests, or an operator's choice).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["Moderation", "NoModeration", "OutputCheck", "Retracted", "Withheld"]


class Retracted(Exception):
    """The answer failed content safety: the client must remove what it showed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Withheld(Retracted):
    """The rest of the answer failed content safety before any of it was shown (strict
    mode): what was shown had passed, so it stays; the answer ends with ``content_filter``
    and no ``retract``."""


class OutputCheck(Protocol):
    """Checks one streamed answer."""

    def on_release(self, release: Callable[[str], None]) -> None:
        """Where to hand text that becomes releasable between calls (strict mode: when its
        WeChat check passes), in order, as soon as it is; registered before the first
        `feed`. Without it, such text waits for the next `feed` or `finish`."""
        ...

    def feed(self, piece: str) -> str:
        """Text that may be sent now (possibly ""); raises `Retracted`."""
        ...

    def verdict(self) -> None:
        """Raises `Retracted` if a check running in the background has failed."""
        ...

    async def finish(self) -> str:
        """The held-back rest, after the final checks of the whole answer; or `Retracted`."""
        ...

    async def conclude(self) -> None:
        """The answer ended early: wait for the checks of what was released (the held-back
        rest was never shown and is not checked); `Retracted` if one of them failed."""
        ...

    async def aclose(self) -> None: ...


class Moderation(Protocol):
    @property
    def checks_remotely(self) -> bool:
        """Whether `check_input` does I/O worth overlapping with the provider call."""
        ...

    def check_input_locally(self, text: str, *, user_id: str) -> None:
        """Raises `ContentRejected` on a listed word (microseconds, no I/O)."""
        ...

    async def check_input(self, text: str, *, user_id: str) -> None:
        """The authoritative input check; raises `ContentRejected`."""
        ...

    def output(self, *, user_id: str, message_id: str, remote: bool = True) -> OutputCheck:
        """The checks of one answer; ``remote=False``: the local list only (a caller with
        no WeChat openid, whom WeChat's check cannot take)."""
        ...

    async def aclose(self) -> None: ...


class _Passthrough:
    def on_release(self, release: Callable[[str], None]) -> None:
        pass

    def feed(self, piece: str) -> str:
        return piece

    def verdict(self) -> None:
        pass

    async def finish(self) -> str:
        return ""

    async def conclude(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class NoModeration:
    checks_remotely = False

    def check_input_locally(self, text: str, *, user_id: str) -> None:
        pass

    async def check_input(self, text: str, *, user_id: str) -> None:
        pass

    def output(self, *, user_id: str, message_id: str, remote: bool = True) -> OutputCheck:
        return _Passthrough()

    async def aclose(self) -> None:
        pass
