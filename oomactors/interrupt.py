"""Ctrl-C as one process-wide flag that the engine polls.

A SIGINT handler must not unwind a run from an arbitrary bytecode (that is how a run was
left spinning with its actors half torn down).  The command line installs a handler that
only calls :func:`request`; the engine checks :func:`requested` at its own safe places,
ends the run at the current virtual time with the reason ``"interrupted"`` and records no
simulated event after it.  Tools that run many simulations (compare, explore) check it
between runs too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_requested = False


def request() -> None:
    """Ask every run in this process to stop at its next safe place (signal-handler safe)."""
    global _requested
    _requested = True


def requested() -> bool:
    return _requested


def clear() -> None:
    global _requested
    _requested = False


def check() -> None:
    """Raise :class:`KeyboardInterrupt` if a stop was requested: for tools that run many
    simulations, between two runs (never inside one: the engine polls the flag itself)."""
    if _requested:
        raise KeyboardInterrupt


@contextmanager
def for_python_callers() -> Iterator[Callable[[], bool]]:
    """While one run started from Python (a script, a notebook) goes on, Ctrl-C asks it to
    stop at its next safe place instead of being held back by the event loop until the
    run's end; a second Ctrl-C raises :class:`KeyboardInterrupt` at once.  Yields a
    function that tells whether Ctrl-C was pressed: the caller then raises
    :class:`KeyboardInterrupt` once the run has recorded its end.

    Only where Python's own handler is in place, in the main thread: the command line has
    its own handler, a worker thread cannot receive signals, and a caller who installed a
    handler (or ignores SIGINT) keeps it."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield lambda: False
        return
    pressed = False

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal pressed
        if pressed:
            signal.default_int_handler(signum, frame)
        pressed = True
        request()

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield lambda: pressed
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if pressed:
            clear()
