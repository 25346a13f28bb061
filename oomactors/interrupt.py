"""Ctrl-C as one process-wide flag that the engine polls.

A SIGINT handler must not unwind a run from an arbitrary bytecode (that is how a run was
left spinning with its actors half torn down).  The command line installs a handler that
only calls :func:`request`; the engine checks :func:`requested` at its own safe places,
ends the run at the current virtual time with the reason ``"interrupted"`` and records no
simulated event after it.  Tools that run many simulations (compare, explore) check it
between runs too.
"""

from __future__ import annotations

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
