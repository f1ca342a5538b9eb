"""Pausing Python's cycle collector while a process builds what it keeps.

Loading a model imports libraries (torch, diffusers and transformers add some 400,000 objects)
and builds modules: objects that live on. While they are made, the cycle collector runs again
and again, each full pass rescanning everything allocated so far; in a ``nodeflow run`` of the
demo model that was 0.7 s of 3.5 s (see BENCHMARKS.md, "Cold start"). ``paused()`` turns
automatic collection off for a block; reference counting frees objects as usual meanwhile, only
cycles wait. When the block has allocated many objects, one full collection follows it, so they
are scanned once and then left in the oldest generation, instead of being carried through the
young generations' collections one pass after another during the run.

Pauses nest and may overlap across threads: the collector comes back on when the last one ends,
and only if it was on when the first began.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

COLLECT_AFTER = 50_000
"""Objects allocated (net) during a pause above which one full collection follows it."""

_lock = threading.RLock()  # a finalizer run by the collection may pause too
_pauses = 0
_was_enabled = False


@contextmanager
def paused() -> Iterator[None]:
    """Automatic cycle collection off for the block (see the module's docstring)."""
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                if gc.get_count()[0] > COLLECT_AFTER:
                    gc.collect()  # before enabling: no automatic pass over them first
                gc.enable()
