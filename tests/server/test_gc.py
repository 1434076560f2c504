"""The server's collector settings (`tune_gc`): start-up objects frozen, young collections rarer.

Checked in a fresh interpreter: freezing (and collecting) the test process's own heap would
finalise whatever earlier tests left for the collector on their closed event loops, and the
errors of that would be reported against whichever test runs next.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json
import mpchat.app
from mpchat.server import tune_gc
before = gc.get_threshold()
tune_gc()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_tune_gc_freezes_what_exists_and_raises_the_young_threshold():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    seen = json.loads(out)
    assert seen["before"] == [700, 10, 10]  # Python's defaults, which it replaces
    assert seen["after"] == [10_000, 10, 10]
    assert seen["frozen"] > 10_000  # the app's modules, at least
