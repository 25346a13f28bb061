"""Workingset detection, reduced to its counter (mm/workingset.c).

When reclaim evicts a page-cache page the kernel leaves a *shadow entry* in the file's
page cache; a later read that finds the shadow is a **refault**, counted in
``/proc/vmstat`` as ``workingset_refault_file`` (``workingset_refault`` before 5.9).
Userspace reads that counter to tell thrashing from ordinary reclaim: Android's lmkd
compares the refaults since its last reset with the size of the file LRU.

The model's page cache has no files or offsets, only owners (the mm that maps it, the
memcg that faulted it, or nobody for unmapped cache outside any memcg).  So a shadow is
kept as a count per owner: evicting ``k`` pages of an owner leaves ``k`` shadows, and page
cache that owner reads afterwards refaults while shadows are left (see README "What is
simplified").  Nothing here emits an event or changes what reclaim does: it only counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine


def workingset_eviction(m: "Machine", owner: Any, nr: int) -> None:
    """``nr`` clean page-cache pages of ``owner`` were evicted: they leave shadows."""
    if nr > 0:
        shadows = m.workingset_shadows
        shadows[owner] = shadows.get(owner, 0) + nr


def workingset_refault(m: "Machine", owner: Any, nr: int) -> int:
    """``owner`` read ``nr`` pages into the page cache: those that find a shadow are
    refaults.  Returns how many."""
    shadows = m.workingset_shadows
    have = shadows.get(owner, 0)
    k = min(have, nr)
    if k:
        if have == k:
            del shadows[owner]
        else:
            shadows[owner] = have - k
        m.vmstat["workingset_refault_file"] += k
    return k
