"""The numbers of a run of order-0 first attempts (page_alloc.rmqueue_pcp_run): how many
requests of ``nr`` pages this CPU's per-CPU list serves in a row, and what they leave on
it, in the zone's counters and in the page tables.

:func:`pcp_requests` walks the requests one at a time where they differ, and jumps over a
*steady stretch* in a few operations: once a refill leaves ``batch`` pages on the list and
``batch < nr``, every later request refills again and takes exactly its own pages from the
buddy lists, so between two page-table pages the requests only move the CPU's drift, whose
folds into the zone's free counter come at a fixed period.  The jump gives what walking
them would (``stretches=False`` walks every request; tests/test_fault_batch.py compares
the two on random states and on whole runs) -- pure speed.
"""

from __future__ import annotations

from .task import PTRS_PER_PTE

STRETCHES = True   # jump over steady stretches (False: walk every request; for the tests)


def pcp_requests(nr: int, limit: int, have: int, diff: int, vm_free: int, nr_free: int, floor: int,
                 batch: int, drift: int, mapped: int | None, pgtables: int,
                 stretches: bool | None = None) -> tuple[int, int, int, int, int, int]:
    """Up to ``limit`` requests of ``nr`` order-0 pages, each served while the zone's folded
    free counter ``vm_free`` is above ``floor`` (zone_watermark_fast's order-0 test) and
    the buddy lists (``nr_free``) can refill the per-CPU list (``have`` pages; a refill
    takes what the request lacks plus ``batch``, or only what it lacks when that is all
    there is).  Each refill moves this CPU's drift ``diff``, folded into ``vm_free`` once
    it leaves [-drift, drift].  ``mapped`` (pages mapped by the mm; None: no page tables)
    and ``pgtables`` (its page-table pages): a request beyond what the page tables cover
    also takes the page-table pages it needs.  Returns (requests served, have, diff,
    vm_free, nr_free, pgtables)."""
    if stretches is None:
        stretches = STRETCHES
    covered = pgtables * PTRS_PER_PTE if mapped is not None else 1 << 62
    mapped = mapped or 0
    done = 0
    while done < limit and vm_free > floor:
        if stretches and have == batch < nr and -drift <= diff <= drift and mapped + nr <= covered:
            # a steady stretch: up to the next request that needs a page-table page
            n = min(limit - done, (covered - mapped) // nr, nr_free // nr)
            if n > 1:
                k, diff, vm_free = _stretch(n, nr, diff, vm_free, floor, drift)
                done += k
                mapped += k * nr
                nr_free -= k * nr
                continue
        mapped += nr
        total = nr
        if mapped > covered:
            total += -(-mapped // PTRS_PER_PTE) - pgtables
        if have < total:  # rmqueue's refill; mod_free's fold
            want = total - have + batch
            if nr_free < want:
                want = total - have
                if nr_free < want:
                    break
            nr_free -= want
            have += want - total
            diff -= want
            if diff > drift or diff < -drift:
                vm_free += diff
                diff = 0
        else:
            have -= total
        if total != nr:
            pgtables += total - nr
            covered = pgtables * PTRS_PER_PTE
        done += 1
    return done, have, diff, vm_free, nr_free, pgtables


def _stretch(n: int, nr: int, diff: int, vm_free: int, floor: int, drift: int) -> tuple[int, int, int]:
    """``n`` steady requests of ``nr`` pages each (every one takes ``nr`` from the drift),
    the first with ``vm_free > floor`` and |diff| <= drift: those served before the
    watermark test fails, and the drift and free counter after them."""
    first = (diff + drift) // nr + 1   # requests up to the first fold
    if first > n:
        return n, diff - n * nr, vm_free
    vm_free += diff - first * nr
    if vm_free <= floor:
        return first, 0, vm_free
    period = drift // nr + 1           # requests between two folds from a drift of 0
    drop = period * nr
    folds = (n - first) // period      # folds after the first within the stretch
    needed = -(-(vm_free - floor) // drop)  # folds until the watermark test fails
    if needed <= folds:
        return first + needed * period, 0, vm_free - needed * drop
    return n, -(n - first - folds * period) * nr, vm_free - folds * drop
