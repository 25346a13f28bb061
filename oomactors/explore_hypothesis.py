"""Hypothesis searches that depend on their seed alone (explore's ``hypothesis`` scheduler).

Hypothesis (6.1xx) also draws, now and then, constants it finds in the project's own loaded
modules (``sys.modules``), so the same search from the same seed drew other schedules in a
process that had imported more of the project: a test of the whole suite found no race
where the same test alone found it at run 34.  :func:`seed_only_draws` holds that pool
empty for the length of a search; Hypothesis' built-in constants stay.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def seed_only_draws() -> Iterator[None]:
    """Within the block, Hypothesis draws no constants from the loaded modules.  Without
    the internals this relies on (another Hypothesis), it does nothing."""
    try:
        from hypothesis.internal.conjecture import providers
        real = providers._get_local_constants
        cache = providers.CONSTANTS_CACHE.cache
        empty = providers.Constants(integers=providers.SortedSet(),
                                    floats=providers.SortedSet(key=providers.float_to_int),
                                    bytes=providers.SortedSet(), strings=providers.SortedSet())
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - another Hypothesis
        yield
        return
    providers._get_local_constants = lambda: empty
    cache.clear()  # it keeps the constants allowed per kind of draw, local ones included
    try:
        yield
    finally:
        providers._get_local_constants = real
        cache.clear()
