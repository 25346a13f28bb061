"""shmem (tmpfs, shared anonymous memory) under reclaim: swap-backed pages on the anon LRU
(mm/shmem.c shmem_writepage, mm/vmscan.c, Linux 5.10).

shmem pages sit on the anonymous LRU lists, so with free swap they count as reclaimable
(``zone_reclaimable_pages``) and reclaim swaps them out like anonymous pages.  A swapped
shmem page leaves the mapping process's ``MM_SHMEMPAGES`` (its pte is simply cleared: no
swap pte, so no ``MM_SWAPENTS``); the swap entry belongs to the shmem object, which the
model keeps with the mm that created it (``mm.shmem_swap``) and frees when that mm goes.
The memcg's charge moves from memory to swap as for anonymous pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .memcontrol import mem_cgroup_get_nr_swap_pages, mem_cgroup_swapout, memcg_count_scan
from .swap_state import add_to_swap

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .mmzone import Zone


def shmem_lru_pages(zone: "Zone", skip: frozenset = frozenset(), memcg: object = False) -> int:
    """shmem pages of the zone on the anon LRU: all of them, those outside the ``skip``
    memcgs, or (``memcg`` given) those of one memcg."""
    g = zone.gid
    if memcg is not False:
        return sum(mm.shmem[g] for mm in zone.shmem_lru if mm.memcg is memcg)
    if not skip:
        return zone.nr["shmem"]
    return sum(mm.shmem[g] for mm in zone.shmem_lru if mm.memcg not in skip)


def shmem_swapout(m: "Machine", zone: "Zone", budget: int, skip: frozenset = frozenset(),
                  memcg: object = False) -> int:
    """Send up to ``budget`` shmem pages of the zone to swap, least recently faulted object
    first (shmem_writepage); the pages are under IO until the caller's wait ends."""
    taken = 0
    g = zone.gid
    for mm in list(zone.shmem_lru):
        if taken >= budget:
            break
        if (memcg is not False and mm.memcg is not memcg) or (skip and mm.memcg in skip):
            continue
        k = min(mm.shmem[g], budget - taken)
        if mm.memcg is not None:
            k = min(k, max(0, mem_cgroup_get_nr_swap_pages(m, mm.memcg)))  # swap.max
        if k:
            mm.shmem[g] -= k
            mm.shmem_swap += k
            mem_cgroup_swapout(mm, k)
            if memcg is False:
                memcg_count_scan(mm.memcg, k, k)  # memcg reclaim counts its own scan
            if not mm.shmem[g]:
                del zone.shmem_lru[mm]
            taken += k
    add_to_swap(m, zone, "shmem", taken)
    return taken
