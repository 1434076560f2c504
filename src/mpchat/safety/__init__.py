"""Content safety: the local word filter and the streaming output guard.

``WordFilter`` checks a whole text (user input, a finished answer); ``OutputGuard`` wraps one
streamed answer and releases only text that cannot be the start of a listed word.
"""

from mpchat.safety.output_guard import GuardResult, OutputGuard
from mpchat.safety.wordfilter import Hit, WordFilter

__all__ = ["GuardResult", "Hit", "OutputGuard", "WordFilter"]
