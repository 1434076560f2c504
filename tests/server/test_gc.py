"""The server's collector settings (`tune_gc`): start-up objects frozen, young collections rarer."""

from __future__ import annotations

import gc

from mpchat.server import tune_gc


def test_tune_gc_freezes_what_exists_and_raises_the_young_threshold():
    thresholds = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 10_000  # this interpreter's modules, at least
        assert gc.get_threshold() == (10_000, 10, 10)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
