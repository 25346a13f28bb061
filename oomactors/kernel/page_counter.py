"""Page counters (mm/page_counter.c, Linux 5.10): hierarchical usage against a limit.

A memcg's ``memory`` and ``swap`` counters each point at the parent memcg's; a charge walks
up to the root so every ancestor carries its descendants' usage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from .task import PAGE_SIZE

if TYPE_CHECKING:  # pragma: no cover
    from .memcontrol import MemCgroup

PAGE_COUNTER_MAX = ((1 << 63) - 1) // PAGE_SIZE   # "max": LONG_MAX / PAGE_SIZE on 64-bit


class PageCounter:
    """struct page_counter: usage and limits of one memcg, linked to the parent's counter."""

    __slots__ = ("memcg", "parent", "usage", "max", "high", "min", "low", "emin", "elow",
                 "failcnt", "forced", "watermark")

    def __init__(self, memcg: "MemCgroup", parent: "PageCounter | None", max_: int,
                 high: int = PAGE_COUNTER_MAX, min_: int = 0, low: int = 0) -> None:
        self.memcg = memcg
        self.parent = parent
        self.usage = 0
        self.max = max_
        self.high = high
        self.min = min_
        self.low = low
        self.emin = 0        # effective protection, recomputed top-down by each reclaim walk
        self.elow = 0
        self.failcnt = 0
        self.forced = 0      # pages over max that force charges put there (the invariant allows them)
        self.watermark = 0   # the high-water mark of usage (memory.peak, max_usage_in_bytes)

    def chain(self) -> Iterable["PageCounter"]:
        c: PageCounter | None = self
        while c is not None:
            yield c
            c = c.parent


def page_counter_try_charge(counter: PageCounter, nr_pages: int) -> PageCounter | None:
    """Charge the counter and every ancestor; on the first that would pass its max, count
    a failure there, undo, and return it (the memcg that is over its limit)."""
    done = []
    for c in counter.chain():
        new = c.usage + nr_pages
        if new > c.max:
            c.failcnt += 1
            for d in done:
                d.usage -= nr_pages
            return c
        c.usage = new
        if new > c.watermark:
            c.watermark = new
        done.append(c)
    return None


def page_counter_charge(counter: PageCounter, nr_pages: int) -> None:
    """Charge without looking at the limits (a force charge)."""
    for c in counter.chain():
        c.usage += nr_pages
        if c.usage > c.watermark:
            c.watermark = c.usage
        if c.usage > c.max:
            c.forced = max(c.forced, c.usage - c.max)


def page_counter_uncharge(counter: PageCounter, nr_pages: int) -> None:
    for c in counter.chain():
        c.usage -= nr_pages
        if c.usage <= c.max:
            c.forced = 0
