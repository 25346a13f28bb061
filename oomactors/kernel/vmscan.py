"""Page reclaim: shrink_node and direct reclaim (mm/vmscan.c, 5.10; kswapd is in
kernel/vmscan_kswapd.py).

What reclaim can take, and what it costs:

* clean page cache -- freed at once (mapped pages are unmapped from their mm first);
* dirty page cache -- only kswapd writes it back (direct reclaim skips it, as 5.10 does);
  the writer waits for the IO at the writeback bandwidth, then frees the pages;
* anonymous memory -- swapped out while swap has free slots and the request allows IO;
  the reclaimer waits for the swap IO, then frees the pages;
* reclaimable slab (dentry and inode caches) -- shrunk by the superblock shrinker on every
  pass, when __GFP_FS allows (kernel/shrinker.py).

Lists are scanned ``size >> priority`` at a time, file and anon in proportion to
``vm.swappiness``.  Each pass charges CPU time for the pages it looked at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import gfp as G
from . import params
from .cpuset import cpuset_zone_allowed
from .memcontrol import (for_each_mem_cgroup_tree, mem_cgroup_swapout, memcg_count_scan,
                         memcg_memory_event, memcg_of, swap_room, uncharge_pages)
from .memcontrol_protection import (mem_cgroup_below_low, mem_cgroup_below_min,
                                    mem_cgroup_calculate_protection)
from .mmzone import DEF_PRIORITY, SWAP_CLUSTER_MAX, Node, Zone
from .lru import ANON, FILE, inactive_is_low, lru_sizes, scan_inactive, shrink_active_list
from .shmem import shmem_lru_pages, shmem_swapout
from .shrinker import shrink_slab
from .swap_state import add_to_swap
from .vmscan_empty import empty_pass, empty_passes
from .vmscan_throttle import throttle_direct_reclaim, throttle_node
from .workingset import workingset_eviction

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .page_alloc import AllocContext
    from .task import Task


_GFP_IO = G.__GFP_IO  # (a class body would mangle the name)


class ScanControl:
    __slots__ = ("gfp_mask", "order", "priority", "nr_to_reclaim", "reclaim_idx", "may_writepage",
                 "may_swap", "nr_scanned", "nr_reclaimed", "is_kswapd", "nr_writeback",
                 "memcg_low_reclaim", "memcg_low_skipped", "may_deactivate", "skipped_deactivate",
                 "force_deactivate", "next_pass_empty")

    def __init__(self, gfp_mask: int, order: int, nr_to_reclaim: int, reclaim_idx: int,
                 is_kswapd: bool) -> None:
        self.gfp_mask = gfp_mask
        self.order = order
        self.priority = DEF_PRIORITY
        self.nr_to_reclaim = nr_to_reclaim
        self.reclaim_idx = reclaim_idx
        self.may_writepage = True
        self.may_swap = True
        self.nr_scanned = 0
        self.nr_reclaimed = 0
        self.is_kswapd = is_kswapd
        self.nr_writeback = 0
        self.memcg_low_reclaim = False  # memory.low is breached on this pass
        self.memcg_low_skipped = False  # a memcg was spared for its memory.low
        self.may_deactivate = 0        # DEACTIVATE_ANON | DEACTIVATE_FILE (-1: not decided yet)
        self.skipped_deactivate = False
        self.force_deactivate = False
        self.next_pass_empty = False   # vmscan_empty: the caller's next pass finds nothing either

    def can_swap(self, m: "Machine") -> bool:
        """Anonymous (and shmem) pages may be scanned at all: swapping is allowed, the
        request may start IO, and swap has room."""
        return bool(self.may_swap and self.gfp_mask & _GFP_IO and m.swap_free > 0)


def _scan_size(size: int, priority: int) -> int:
    return max(size >> priority, min(size, SWAP_CLUSTER_MAX)) if size else 0


def get_scan_count(total: int, anon: int, file: int) -> tuple[int, int]:
    """Split a scan between the anon and file lists by their sizes weighted by swappiness."""
    if anon:
        wa = params.SWAPPINESS * anon
        wf = (200 - params.SWAPPINESS) * file
        anon_scan = total * wa // (wa + wf) if wa + wf else 0
    else:
        anon_scan = 0
    return anon_scan, min(total - anon_scan, file)


def _reclaim_file(m: "Machine", cur: "Task", zone: Zone, budget: int, skip: frozenset = frozenset()) -> int:
    """Scan clean inactive page cache, oldest owner first (unmapped cache sits at the head):
    referenced pages are kept or activated (kernel/lru.py), the rest is evicted.  The
    memcgs in ``skip`` are protected by memory.min/low this pass."""
    freed = scanned = 0
    for owner in list(zone.file_lru):
        if scanned >= budget:
            break
        if skip and memcg_of(owner) in skip:
            continue
        nscan, k, ws = scan_inactive(m, zone, FILE, owner, budget - scanned)
        scanned += nscan
        if k:
            m.uncharge_file(zone, owner, k)
            uncharge_pages(owner, k)  # the memcg that faulted the page cache
            workingset_eviction(m, owner, k, zone, ws)
            freed += k
        if nscan:
            memcg_count_scan(memcg_of(owner), nscan, k)
    if freed:
        m.free_to_buddy(cur, zone, freed)
    return freed


def _take_anon(m: "Machine", zone: Zone, budget: int, skip: frozenset = frozenset()) -> int:
    """Scan inactive anonymous pages, oldest mm first: referenced ones are activated, the
    rest try_to_unmap into swap entries (leaving shadows in the swap cache).  The memcgs in
    ``skip`` are protected by memory.min/low this pass."""
    taken = scanned = 0
    g = zone.gid
    for mm in list(zone.anon_lru):
        if scanned >= budget:
            break
        if skip and mm.memcg in skip:
            continue
        want = budget - scanned
        if mm.memcg is not None:
            want = min(want, swap_room(m, mm))  # past swap.max, mem_cgroup_try_charge_swap fails
        nscan, k, ws = scan_inactive(m, zone, ANON, mm, want)
        scanned += nscan
        if k:
            mm.anon[g] -= k
            mm.swapents += k
            mem_cgroup_swapout(mm, k)
            workingset_eviction(m, mm, k, zone, ws, ANON)
            if not mm.anon[g]:
                del zone.anon_lru[mm]
            taken += k
        if nscan:
            memcg_count_scan(mm.memcg, nscan, k)
    add_to_swap(m, zone, "anon", taken)
    return taken


async def shrink_node(m: "Machine", cur: "Task", node: Node, sc: ScanControl) -> None:
    """Scan the node's LRU lists at sc.priority; write back and swap out where allowed."""
    prio = sc.priority
    scanned = reclaimed = 0
    can_swap = sc.can_swap(m)
    io_pages = 0
    wb_pages = 0
    inflight: list[tuple[Zone, int]] = []   # our pages under IO, by zone
    reclaim_idx = sc.reclaim_idx
    skip = protected_memcgs(m, cur, sc) if len(m.memcgs) > 1 else _NO_SKIP
    sc.may_deactivate = -1  # set_may_deactivate, once a zone of this node has a scan target
    for zone in node.zones:
        if zone.idx > reclaim_idx:
            continue
        nr = zone.nr
        file = nr["file"] + nr["dirty"]
        anon = nr["anon"] if can_swap else 0
        if skip:
            # the protected memcgs' lruvecs are not scanned at all
            file -= protected_pages(zone, skip, "file")
            anon -= protected_pages(zone, skip, "anon") if can_swap else 0
        shmem = shmem_lru_pages(zone, skip) if can_swap else 0
        anon += shmem  # swap-backed: on the anon LRU
        # the empty-list fast skip covers the LRU part only: shrink_node_memcgs calls
        # shrink_slab after shrink_lruvec whatever the lruvec held
        if file + anon:
            anon_scan, file_scan = get_scan_count(_scan_size(file + anon, prio), anon, file)
            anon_scan, file_scan, file = age_active_lists(m, zone, sc, anon_scan, file_scan)
            scanned += file_scan + anon_scan
            # clean and dirty file pages are met in proportion to their share of the list
            dirty_scan = file_scan * nr["dirty"] // file if file else 0
            clean_scan = file_scan - dirty_scan
            reclaimed += _reclaim_file(m, cur, zone, clean_scan, skip)
            if dirty_scan and sc.is_kswapd and sc.may_writepage and sc.gfp_mask & G.__GFP_FS:
                nr["dirty"] -= dirty_scan
                nr["writeback"] += dirty_scan
                wb_pages += dirty_scan
                inflight.append((zone, dirty_scan))
            if anon_scan:
                # the anon list holds anonymous and shmem pages: each loses its share
                shmem_scan = anon_scan * shmem // anon
                taken = _take_anon(m, zone, min(anon_scan - shmem_scan, m.swap_free), skip)
                taken += shmem_swapout(m, zone, min(shmem_scan, m.swap_free), skip)
                if taken:
                    io_pages += taken
                    inflight.append((zone, taken))
        # shrink_slab after shrink_lruvec, whatever the lists held (kernel/shrinker.py)
        if nr["slab_reclaimable"] > m.slab_floor[zone.gid]:
            reclaimed += shrink_slab(m, cur, zone, sc.gfp_mask, prio)
    sc.nr_scanned += scanned
    ns = params.RECLAIM_BASE_NS + scanned * params.SCAN_NS_PER_PAGE
    if not m.sched.run_nowait(cur, ns):  # no coroutine while the jiffy is not used up
        await m.sched.run(cur, ns, "reclaim.scan")
    io_jiffies = 0
    if io_pages or wb_pages:
        # the reclaimer waits for its IO; others run meanwhile
        done = 0
        if io_pages:
            done = m.swap_io.submit(m.now, io_pages)
        if wb_pages:
            done = max(done, m.writeback_io.submit(m.now, wb_pages))
        io_jiffies = done - m.now
        m.emit("sim:io_wait", cur.pid, io_pages + wb_pages, io_jiffies, "reclaim")
        await m.sched.sleep(cur, io_jiffies, "reclaim.io_wait")
        reclaimed += _finish_writeback(m, cur, inflight)
        sc.nr_writeback += io_pages + wb_pages
    sc.nr_reclaimed += reclaimed
    if reclaimed:
        node.kswapd_failures = 0  # any success revives a hopeless kswapd
    if scanned or reclaimed:  # most passes of a starved node find nothing: nothing to add
        vmstat = m.vmstat
        vmstat["pgscan"] += scanned
        vmstat["pgsteal"] += reclaimed
        scan_key, steal_key = _PG_KEYS[sc.is_kswapd]
        vmstat[scan_key] += scanned
        vmstat[steal_key] += reclaimed
    m.emit("vmscan:mm_vmscan_node_reclaim", cur.pid, node.nid, scanned, reclaimed,
           io_pages + wb_pages, io_jiffies)


_NO_SKIP: frozenset = frozenset()
# the per-reclaimer vmstat counters, by ScanControl.is_kswapd
_PG_KEYS = {False: ("pgscan_direct", "pgsteal_direct"), True: ("pgscan_kswapd", "pgsteal_kswapd")}


def protected_memcgs(m: "Machine", cur: "Task", sc: ScanControl) -> frozenset:
    """shrink_node_memcgs' protection test, for global reclaim (kswapd and direct): the
    memcgs whose lruvecs this pass leaves alone.  A memcg at or below its effective
    memory.min is always spared; one at or below memory.low is spared unless this is the
    memcg_low_reclaim retry, which counts a MEMCG_LOW event for each breached one."""
    if len(m.memcgs) <= 1:
        return frozenset()
    root = m.root_mem_cgroup  # sc->target_mem_cgroup is NULL: the walk starts at the root
    skip = []
    for memcg in for_each_mem_cgroup_tree(root):
        if memcg is root:
            continue
        mem_cgroup_calculate_protection(root, memcg)
        if mem_cgroup_below_min(memcg):
            skip.append(memcg)  # hard protection: if nothing else is reclaimable, OOM
        elif mem_cgroup_below_low(memcg):
            if not sc.memcg_low_reclaim:
                sc.memcg_low_skipped = True
                skip.append(memcg)
                continue
            memcg_memory_event(m, memcg, "low", cur.pid)
    return frozenset(skip)


def protected_pages(zone: Zone, skip: frozenset, lru: str) -> int:
    """Pages of the spared memcgs on one of the zone's LRU lists ("file" or "anon")."""
    if lru == "file":
        return sum(k for o, k in zone.file_owner.items() if memcg_of(o) in skip)
    return sum(mm.anon[zone.gid] for mm in zone.anon_lru if mm.memcg in skip)


# --- LRU aging (shrink_node's deactivation policy, shrink_list, shrink_active_list) --------
DEACTIVATE_ANON, DEACTIVATE_FILE = 1, 2


def set_may_deactivate(m: "Machine", node: Node, sc: ScanControl) -> None:
    """shrink_node: age an active list while its inactive list is low, or while refaults
    are activating pages (a new working set is being established: deactivate stale pages
    quickly), judged on the node's lists; a forced retry deactivates both."""
    if sc.force_deactivate:
        sc.may_deactivate = DEACTIVATE_ANON | DEACTIVATE_FILE
        return
    if not any(z.lru.active[ANON] or z.lru.active[FILE] for z in node.zones):
        sc.may_deactivate = 0  # no active page anywhere: nothing to decide
        return
    ia = aa = i_f = af = 0
    for z in node.zones:
        s = lru_sizes(z)
        ia, aa, i_f, af = ia + s[0], aa + s[1], i_f + s[2], af + s[3]
    snap = getattr(node, "refaults", (0, 0))
    v = m.vmstat
    may = 0
    if v["workingset_activate_anon"] != snap[0] or inactive_is_low(ia, aa):
        may |= DEACTIVATE_ANON
    if v["workingset_activate_file"] != snap[1] or inactive_is_low(i_f, af):
        may |= DEACTIVATE_FILE
    sc.may_deactivate = may


def snapshot_refaults(m: "Machine", node: Node) -> None:
    """The refault activations seen so far; the next reclaim compares against them."""
    node.refaults = (m.vmstat["workingset_activate_anon"], m.vmstat["workingset_activate_file"])


def age_active_lists(m: "Machine", zone: Zone, sc: ScanControl, anon_scan: int,
                     file_scan: int) -> tuple[int, int, int]:
    """shrink_lruvec's share of each type's scan for its active list: shrink_active_list
    where deactivation is allowed (skipped otherwise), the rest for the inactive list.
    Returns (inactive anon scan, inactive file scan, inactive file size)."""
    if sc.may_deactivate < 0:
        set_may_deactivate(m, zone.node, sc)
    ia, aa, i_f, af = lru_sizes(zone)
    out = []
    for scan, inactive, active, kind, bit in ((anon_scan, ia, aa, ANON, DEACTIVATE_ANON),
                                               (file_scan, i_f, af, FILE, DEACTIVATE_FILE)):
        act_scan = scan * active // (inactive + active) if active else 0
        if act_scan:
            if sc.may_deactivate & bit:
                shrink_active_list(m, zone, kind, act_scan)
            else:
                sc.skipped_deactivate = True
        out.append(scan - act_scan)
    # rebalance the anon lists even when anon was not scanned (swap exists)
    if m.total_swap_pages and zone.lru.active[ANON]:
        ia, aa, _, _ = lru_sizes(zone)
        if inactive_is_low(ia, aa):
            shrink_active_list(m, zone, ANON, SWAP_CLUSTER_MAX)
    return out[0], out[1], i_f


def _finish_writeback(m: "Machine", cur: "Task", inflight: list[tuple[Zone, int]]) -> int:
    """end_page_writeback for the pages this reclaimer sent to IO, then free them (they were
    chosen for reclaim); other reclaimers' pages stay under IO until their own wait ends."""
    freed = 0
    for zone, k in inflight:
        zone.nr["writeback"] -= k
        m.free_to_buddy(cur, zone, k)
        freed += k
    return freed


async def try_to_free_pages(m: "Machine", cur: "Task", ac: "AllocContext", order: int, gfp_mask: int) -> int:
    """Direct reclaim: raise the priority until SWAP_CLUSTER_MAX pages came back."""
    # a fatal signal while throttled: report progress so that the allocator does not OOM
    throttle = throttle_node(m, cur, ac)
    if throttle is not None and await throttle_direct_reclaim(m, cur, gfp_mask, ac, throttle):
        return 1
    sc = ScanControl(gfp_mask, order, SWAP_CLUSTER_MAX, G.gfp_zone(gfp_mask), False)
    m.emit("vmscan:mm_vmscan_direct_reclaim_begin", cur.pid, order, G.format_gfp(gfp_mask))
    m.vmstat["allocstall"] += 1
    if m.cpusets_enabled:
        nodes = []
        for z in ac.zones():
            # shrink_zones: global reclaim stays inside the cpuset (the GFP_USER view of it)
            if not cpuset_zone_allowed(m, cur, z, G.GFP_KERNEL | G.__GFP_HARDWALL):
                continue
            if z.node not in nodes:
                nodes.append(z.node)
    else:
        nodes = ac.nodes()  # every zone is allowed: the nodes of the zonelist, kept
    await raise_priority_until_reclaimed(m, cur, nodes, sc, shrink_node)
    if not sc.nr_reclaimed and sc.memcg_low_skipped:
        # do_try_to_free_pages: untapped memory.low reserves -- dip into them, don't OOM
        sc.priority = DEF_PRIORITY
        sc.memcg_low_reclaim = True
        sc.memcg_low_skipped = False
        await raise_priority_until_reclaimed(m, cur, nodes, sc, shrink_node)
    for node in nodes:
        snapshot_refaults(m, node)
    m.emit("vmscan:mm_vmscan_direct_reclaim_end", cur.pid, sc.nr_reclaimed)
    return sc.nr_reclaimed


async def raise_priority_until_reclaimed(m: "Machine", cur: "Task", nodes: list[Node], sc,
                                         shrink) -> None:
    """do_try_to_free_pages' loop: every node at each priority from DEF_PRIORITY down to 0,
    until sc.nr_to_reclaim pages came back."""
    initial_priority = sc.priority
    global_lru = shrink is shrink_node
    while sc.priority >= 0:
        done = empty_passes(m, cur, nodes, sc) if global_lru else 0
        for node in nodes[done:] if done else nodes:  # shrink_zones: the zonelist at this priority
            if sc.next_pass_empty:  # the empty passes were cut short by the jiffy
                sc.next_pass_empty = False
                await empty_pass(m, cur, node, sc)
            else:
                await shrink(m, cur, node, sc)
        if sc.nr_reclaimed >= sc.nr_to_reclaim:
            return
        sc.priority -= 1
        if sc.priority < 0 and not sc.nr_reclaimed and sc.skipped_deactivate:
            # the inactive:active estimates kept the active lists out of reach: once more,
            # deactivating whatever the scan meets
            sc.priority = initial_priority
            sc.force_deactivate = True
            sc.skipped_deactivate = False
