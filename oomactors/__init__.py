"""oomactors: an executable, concurrent model of Linux out-of-memory handling.

The Python API (:mod:`oomactors.api`) is loaded on first use, so ``import oomactors``
stays light and the engine's modules never import the tools built on them:

* :func:`run` -- simulate a config, get a :class:`Run` (summary, console, data frames);
* :func:`load_trace` -- the same :class:`Run` from a trace file;
* :func:`compare` -- run policies over seeds, get a data frame of their outcomes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Run", "compare", "load_trace", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'oomactors' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
