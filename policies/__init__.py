"""Kill policies: who the OOM killer picks.  ``linux`` is the kernel's own selection."""

from .linux import Linux

BUILTIN = {Linux.name: Linux}

__all__ = ["BUILTIN", "Linux"]
