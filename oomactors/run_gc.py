"""The garbage collector during a run: fewer young-generation collections.

A run allocates millions of short-lived containers (event records, coroutine frames,
tuples of arguments) and frees nearly all of them at once by reference counting; the
collector, counting allocations minus frees, still starts a young-generation collection
whenever a burst (a batch of records waiting for the trace writer, an OOM kill's task
dump) takes the count past its threshold (700 by default), and every tenth of those a
middle one, and now and then a full one over every object of the booted machine.  On
the pressure benchmark that was about 2 % of the run's CPU, for nothing: those
collections found almost no garbage.

:func:`fewer_collections` raises the young generation's threshold for as long as a run
lasts (build included) and puts back what was there after the last run of the process
that holds it ends, however it ends (an exception, Ctrl-C, runs nested or overlapping in
threads: the threshold is one per process, so the runs share one count).  Memory stays
bounded: the collector still runs once the allocations that outlive their burst reach
:data:`RUN_THRESHOLD` objects, so reference cycles (an exception's traceback, a killed
task's frames) are still freed, a bounded number of objects later.  The generations'
other thresholds, ``gc.disable()`` and a threshold of 0 (collection off) are left as the
caller set them.

Measured and left out: ``gc.freeze()`` of the booted machine.  With the threshold raised
no full collection happens during the run, so there is nothing left for it to save, and
the objects it unfreezes afterwards land in the oldest generation without being counted
toward its next collection, so a tool running many runs in one process (explore) would
keep the garbage of many machines before a full collection came.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The young generation's threshold during a run (the interpreter's default is 700).
RUN_THRESHOLD = 10_000

_lock = threading.Lock()
_holders = 0                                # runs inside fewer_collections() now
_saved: tuple[int, ...] = ()                # the thresholds before the first of them
_set: tuple[int, ...] = ()                  # the thresholds it set


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the collector's young-generation threshold while the block runs (counted:
    the first of overlapping holders raises it, the last one out puts it back, unless
    someone else set other thresholds meanwhile: theirs stay)."""
    global _holders, _saved, _set
    with _lock:
        if _holders == 0:
            _saved = gc.get_threshold()
            young = _saved[0]
            _set = (young if young == 0 else max(young, RUN_THRESHOLD), *_saved[1:])
            gc.set_threshold(*_set)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and gc.get_threshold() == _set:
                gc.set_threshold(*_saved)
