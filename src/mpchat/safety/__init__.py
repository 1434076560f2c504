"""Content safety: the local word filter, the streaming output guard, and the moderator.

``WordFilter`` checks a whole text (user input, a finished answer), with allow-lists;
``OutputGuard`` wraps one streamed answer and releases only text that cannot be the start of
a listed word; ``Moderator`` puts them together with WeChat's msgSecCheck for the chat
pipeline (``build_moderation`` makes one from settings): answers are checked in segments
(``SegmentPolicy``), in ``stream`` or ``strict`` output mode.
"""

from mpchat.safety.moderator import CHAT_SCENE, Moderator, OpenidCache
from mpchat.safety.output_guard import GuardResult, OutputGuard
from mpchat.safety.segments import STREAM_POLICY, STRICT_POLICY, SegmentPolicy
from mpchat.safety.setup import build_moderation
from mpchat.safety.wordfilter import Hit, WordFilter

__all__ = [
    "CHAT_SCENE",
    "STREAM_POLICY",
    "STRICT_POLICY",
    "GuardResult",
    "Hit",
    "Moderator",
    "OpenidCache",
    "OutputGuard",
    "SegmentPolicy",
    "WordFilter",
    "build_moderation",
]
