"""Reclaim targeted at one memory cgroup (mm/vmscan.c's try_to_free_mem_cgroup_pages,
do_try_to_free_pages and shrink_node_memcgs, Linux 5.10).

Only pages charged to the target's subtree are taken: its memcgs' clean page cache (mapped
by their mms or left unmapped under the memcg) and the anonymous pages of their mms, the
latter only while swap has room and every swap.max up the tree allows it.

memory.min and memory.low are honoured the 5.10 way: the walk recomputes each memcg's
effective protection top-down (``mem_cgroup_calculate_protection``); a memcg at or below its
effective min is skipped, one at or below its effective low is skipped too unless a first
pass reclaimed nothing because of such skips -- then the pass is repeated with
``memcg_low_reclaim`` and every breached low protection counts a ``low`` event.  Above its
protection a memcg is scanned in proportion to its unprotected share (get_scan_count).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import gfp as G
from . import params
from .memcontrol import (MemCgroup, for_each_mem_cgroup_tree, mem_cgroup_get_nr_swap_pages,
                         mem_cgroup_swapout, memcg_count_scan, memcg_memory_event, memcg_of,
                         uncharge_pages)
from .memcontrol_protection import (mem_cgroup_below_low, mem_cgroup_below_min,
                                    mem_cgroup_calculate_protection, mem_cgroup_protection)
from .mmzone import DEF_PRIORITY, MAX_NR_ZONES, SWAP_CLUSTER_MAX, Node, Zone
from .task import PF_MEMALLOC
from .shmem import shmem_lru_pages, shmem_swapout
from .swap_state import add_to_swap
from .lru import ANON, FILE, inactive_is_low, scan_inactive, shrink_active_list, state
from .workingset import workingset_eviction
from .vmscan import (ScanControl, _finish_writeback, get_scan_count,
                     raise_priority_until_reclaimed)

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .task import Task

# include/linux/gfp.h / mm/internal.h: the bits reclaim keeps from the caller's mask
GFP_RECLAIM_MASK = (G.__GFP_RECLAIM | G.__GFP_HIGH | G.__GFP_IO | G.__GFP_FS | G.__GFP_NOWARN
                    | G.__GFP_RETRY_MAYFAIL | G.__GFP_NOFAIL | G.__GFP_NORETRY | G.__GFP_MEMALLOC
                    | G.__GFP_NOMEMALLOC)


class MemcgScanControl(ScanControl):
    __slots__ = ("target_mem_cgroup",)

    def __init__(self, gfp_mask: int, nr_to_reclaim: int, target: MemCgroup, may_swap: bool) -> None:
        super().__init__(gfp_mask, 0, nr_to_reclaim, MAX_NR_ZONES - 1, False)
        self.may_swap = may_swap
        self.target_mem_cgroup = target


async def try_to_free_mem_cgroup_pages(m: "Machine", cur: "Task", memcg: MemCgroup, nr_pages: int,
                                       gfp_mask: int, may_swap: bool) -> int:
    """Reclaim at least ``nr_pages`` (SWAP_CLUSTER_MAX at least) from ``memcg``'s subtree."""
    gfp = (gfp_mask & GFP_RECLAIM_MASK) | (G.GFP_HIGHUSER_MOVABLE & ~GFP_RECLAIM_MASK)
    sc = MemcgScanControl(gfp, max(nr_pages, SWAP_CLUSTER_MAX), memcg, may_swap)
    m.emit("vmscan:mm_vmscan_memcg_reclaim_begin", cur.pid, 0, G.format_gfp(gfp))
    old = cur.flags & PF_MEMALLOC
    cur.flags |= PF_MEMALLOC  # memalloc_noreclaim_save: reclaim must not recurse
    try:
        nr_reclaimed = await do_try_to_free_pages(m, cur, sc)
    finally:
        cur.flags = (cur.flags & ~PF_MEMALLOC) | old
    m.emit("vmscan:mm_vmscan_memcg_reclaim_end", cur.pid, nr_reclaimed)
    return nr_reclaimed


async def do_try_to_free_pages(m: "Machine", cur: "Task", sc: MemcgScanControl) -> int:
    nid = m.cpu_node(cur.last_cpu)
    nodes: list[Node] = []
    for z in m.zonelists[nid]:
        if z.node not in nodes:
            nodes.append(z.node)
    while True:  # retry:
        sc.priority = DEF_PRIORITY
        await raise_priority_until_reclaimed(m, cur, nodes, sc, shrink_node_memcgs)
        if sc.nr_reclaimed:
            return sc.nr_reclaimed
        # untapped memory.low reserves: dip into them rather than go OOM
        if sc.memcg_low_skipped:
            sc.memcg_low_reclaim = True
            sc.memcg_low_skipped = False
            continue
        return 0


async def shrink_node_memcgs(m: "Machine", cur: "Task", node: Node, sc: MemcgScanControl) -> None:
    target = sc.target_mem_cgroup
    zones = [z for z in node.zones if z.idx <= sc.reclaim_idx]
    scanned = reclaimed = 0
    inflight: list[tuple[Zone, int]] = []
    for memcg in for_each_mem_cgroup_tree(target):
        mem_cgroup_calculate_protection(target, memcg)
        if mem_cgroup_below_min(memcg):
            continue  # hard protection: if nothing else is reclaimable, OOM
        if mem_cgroup_below_low(memcg):
            # soft protection: respected while others have unprotected memory to give
            if not sc.memcg_low_reclaim:
                sc.memcg_low_skipped = True
                continue
            memcg_memory_event(m, memcg, "low", cur.pid)
        s, r, io = shrink_lruvec(m, cur, zones, memcg, sc)
        scanned += s
        reclaimed += r
        inflight += io
    io_pages = sum(k for _, k in inflight)
    sc.nr_scanned += scanned
    await m.sched.run(cur, params.RECLAIM_BASE_NS + scanned * params.SCAN_NS_PER_PAGE, "reclaim.scan")
    io_jiffies = 0
    if io_pages:
        # the reclaimer waits for its swap IO; others run meanwhile
        done = m.swap_io.submit(m.now, io_pages)
        io_jiffies = done - m.now
        m.emit("sim:io_wait", cur.pid, io_pages, io_jiffies, "memcg_reclaim")
        await m.sched.sleep(cur, io_jiffies, "reclaim.io_wait")
        reclaimed += _finish_writeback(m, cur, inflight)
        sc.nr_writeback += io_pages
    sc.nr_reclaimed += reclaimed
    if reclaimed:
        node.kswapd_failures = 0  # any success revives a hopeless kswapd
    m.vmstat["pgscan"] += scanned
    m.vmstat["pgsteal"] += reclaimed
    m.vmstat["pgscan_direct"] += scanned  # memcg reclaim is never kswapd's
    m.vmstat["pgsteal_direct"] += reclaimed
    m.emit("vmscan:mm_vmscan_node_reclaim", cur.pid, node.nid, scanned, reclaimed, io_pages, io_jiffies)


def shrink_lruvec(m: "Machine", cur: "Task", zones: list[Zone], memcg: MemCgroup,
                  sc: MemcgScanControl) -> tuple[int, int, list[tuple[Zone, int]]]:
    """Scan one memcg's LRU pages on one node: (scanned, freed now, sent to swap by zone)."""
    prio = sc.priority
    can_swap = sc.can_swap(m) and mem_cgroup_get_nr_swap_pages(m, memcg) > 0
    protection = mem_cgroup_protection(sc.target_mem_cgroup, memcg, sc.memcg_low_reclaim)
    scanned = reclaimed = 0
    inflight: list[tuple[Zone, int]] = []
    for zone in zones:
        owners = [o for o in zone.file_lru if memcg_of(o) is memcg]
        file = sum(zone.file_owner.get(o, 0) for o in owners)
        mms = [mm for mm in zone.anon_lru if mm.memcg is memcg] if can_swap else []
        anon = sum(mm.anon[zone.gid] for mm in mms)
        file, anon = _age_memcg_lists(m, zone, sc, memcg, owners, mms, file, anon)
        shmem = shmem_lru_pages(zone, memcg=memcg) if can_swap else 0
        anon += shmem  # swap-backed: on the anon LRU
        size = file + anon
        if not size:
            continue
        if protection:
            # scan pressure in proportion to the unprotected share of the memcg
            cgroup_size = max(memcg.memory.usage, protection)
            size = max(size - size * protection // cgroup_size, SWAP_CLUSTER_MAX)
        # get_scan_count's size >> priority, without the global model's SWAP_CLUSTER_MAX
        # floor: siblings lose pages in proportion to their (unprotected) sizes
        total = min(size >> prio, file + anon)
        if not total:
            continue
        anon_scan, file_scan = get_scan_count(total, anon, file)
        scanned += file_scan + anon_scan
        freed = _reclaim_file(m, cur, zone, owners, file_scan)
        reclaimed += freed
        taken = 0
        if anon_scan:
            shmem_scan = anon_scan * shmem // anon
            taken = _take_anon(m, zone, mms, min(anon_scan - shmem_scan, m.swap_free))
            taken += shmem_swapout(m, zone, min(shmem_scan, m.swap_free), memcg=memcg)
            if taken:
                inflight.append((zone, taken))
        memcg_count_scan(memcg, file_scan + anon_scan, freed + taken)
    return scanned, reclaimed, inflight


def _age_memcg_lists(m: "Machine", zone: Zone, sc: MemcgScanControl, memcg: MemCgroup, owners: list,
                     mms: list, file: int, anon: int) -> tuple[int, int]:
    """The memcg's active lists: deactivate from them while its inactive list is low (or
    the retry forces it).  Returns the inactive file and anon sizes, which the scan then
    targets (kernel/lru.py)."""
    af = sum(state(zone, FILE, o)[1] for o in owners)
    aa = sum(state(zone, ANON, mm)[1] for mm in mms)
    for inactive, active, kind in ((file - af, af, FILE), (anon - aa, aa, ANON)):
        if not active:
            continue
        if sc.force_deactivate or inactive_is_low(inactive, active):
            # shrink_active_list at the list's scan target for this priority
            k = max(active >> sc.priority, min(active, SWAP_CLUSTER_MAX))
            shrink_active_list(m, zone, kind, k, memcg_of, memcg)
        else:
            sc.skipped_deactivate = True
    af = sum(state(zone, FILE, o)[1] for o in owners)
    aa = sum(state(zone, ANON, mm)[1] for mm in mms)
    return file - af, anon - aa


def _reclaim_file(m: "Machine", cur: "Task", zone: Zone, owners: list, budget: int) -> int:
    """Scan the memcg's clean inactive page cache, least recently active owner first:
    referenced pages are kept or activated, the rest is evicted."""
    freed = scanned = 0
    for owner in owners:
        if scanned >= budget:
            break
        nscan, k, ws = scan_inactive(m, zone, FILE, owner, budget - scanned)
        scanned += nscan
        if k:
            m.uncharge_file(zone, owner, k)
            uncharge_pages(owner, k)
            workingset_eviction(m, owner, k, zone, ws)
            freed += k
    if freed:
        m.free_to_buddy(cur, zone, freed)
    return freed


def _take_anon(m: "Machine", zone: Zone, mms: list, budget: int) -> int:
    """Scan the memcg's inactive anonymous pages: referenced ones are activated, the rest
    try_to_unmap into swap entries, within its swap.max."""
    taken = scanned = 0
    g = zone.gid
    for mm in mms:
        if scanned >= budget:
            break
        room = mem_cgroup_get_nr_swap_pages(m, mm.memcg)
        nscan, k, ws = scan_inactive(m, zone, ANON, mm, min(budget - scanned, max(0, room)))
        scanned += nscan
        if k:
            mm.anon[g] -= k
            mm.swapents += k
            mem_cgroup_swapout(mm, k)
            workingset_eviction(m, mm, k, zone, ws, ANON)
            if not mm.anon[g]:
                del zone.anon_lru[mm]
            taken += k
    add_to_swap(m, zone, "anon", taken)
    return taken
