"""Project exceptions.

A problem in what the user gave us (a config, a trace file, a kernel log, a policy
name, a CLI argument) is an :class:`InputError`: the CLI prints its one-line message
and exits with status 2.  Anything else escaping is a bug in oomactors.
"""

from __future__ import annotations


class OomactorsError(Exception):
    """Base class of every exception oomactors raises on purpose."""


class InputError(OomactorsError):
    """Bad user input.  ``str(err)`` is one line naming where and what is wrong."""

    exit_status = 2


class ConfigError(InputError):
    """A config file that does not validate; the message names the key path."""


class TraceError(InputError):
    """A trace file that cannot be read (bad header, corrupt or truncated records)."""


class SimulationPanic(OomactorsError):
    """The simulated kernel called panic(); the run ends with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
