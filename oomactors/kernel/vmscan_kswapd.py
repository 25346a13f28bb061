"""kswapd (mm/vmscan.c, 5.10): waking it, its nap and sleep, and balance_pgdat's loop of
priorities until some zone of its node is above its HIGH watermark.  The passes themselves
are shrink_node's (kernel/vmscan.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import gfp as G
from . import params
from .cpuset import cpuset_zone_allowed
from ..psi import psi_memstall_enter, psi_memstall_leave
from .page_alloc import __zone_watermark_ok
from .mmzone import MAX_NR_ZONES, MAX_RECLAIM_RETRIES, SWAP_CLUSTER_MAX, Node, Zone
from .vmscan import ScanControl, shrink_node, snapshot_refaults
from .vmscan_throttle import wake_throttled

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .page_alloc import AllocContext
    from .task import Task


def pgdat_balanced(m: "Machine", node: Node, order: int, highest_zoneidx: int) -> bool:
    """Balanced when any eligible zone meets its HIGH watermark (exact count)."""
    managed = False
    for z in node.zones:
        if z.idx > highest_zoneidx or not z.managed:
            continue
        managed = True
        if __zone_watermark_ok(z, order, z.high_wmark, highest_zoneidx, 0, z.nr_free):
            return True
    return not managed


def wakeup_kswapd(m: "Machine", cur: "Task", zone: Zone, gfp_flags: int, order: int,
                  highest_zoneidx: int) -> None:
    if m.cpusets_enabled and not cpuset_zone_allowed(m, cur, zone, gfp_flags):
        return  # a node the allocation may not use is not worth waking kswapd for
    node = zone.node
    if node.kswapd_highest_zoneidx == MAX_NR_ZONES or node.kswapd_highest_zoneidx < highest_zoneidx:
        node.kswapd_highest_zoneidx = highest_zoneidx
    if node.kswapd_order < order:
        node.kswapd_order = order
    if not node.kswapd_sleeping:
        return
    # a hopeless node, or one that is already balanced, is left alone
    if node.kswapd_failures >= MAX_RECLAIM_RETRIES or pgdat_balanced(m, node, order, highest_zoneidx):
        return
    m.emit("vmscan:mm_vmscan_wakeup_kswapd", cur.pid, node.nid, zone.idx, order, G.format_gfp(gfp_flags))
    node.kswapd_sleeping = False
    node.kswapd_waiter.wake("wake")


def wake_all_kswapds(m: "Machine", cur: "Task", order: int, gfp_mask: int, ac: "AllocContext") -> None:
    """wakeup_kswapd for the first zone of each node in the zonelist walk (a node's zones
    are next to each other in a zonelist)."""
    last = None
    for zone in ac.zones():
        node = zone.node
        if node is not last:
            last = node
            wakeup_kswapd(m, cur, zone, gfp_mask, order, ac.highest_zoneidx)


def prepare_kswapd_sleep(m: "Machine", node: Node, order: int, highest_zoneidx: int) -> bool:
    # nobody may stay throttled while kswapd sleeps; a premature wake only throttles again
    wake_throttled(m, node, check=False)
    if node.kswapd_failures >= MAX_RECLAIM_RETRIES:
        return True
    return pgdat_balanced(m, node, order, highest_zoneidx)


async def kswapd_try_to_sleep(m: "Machine", task: "Task", node: Node, reclaim_order: int,
                              highest_zoneidx: int) -> None:
    """Nap HZ/10; if nobody woke us and the node is still balanced, sleep until woken."""
    premature = True
    await m.sched.decision(task, "kswapd.nap")  # a scheduler may hold kswapd back here
    if prepare_kswapd_sleep(m, node, reclaim_order, highest_zoneidx):
        w = node.kswapd_waiter = m.sched.clock.waiter()
        node.kswapd_sleeping = True
        m.sched.put_cpu(task)
        await m.sched.clock.sleep_until(m.now + max(1, m.hz // 10), w)
        node.kswapd_sleeping = False
        premature = w.value == "wake"   # woken by wakeup_kswapd before the nap ended
        if premature:
            # keep the request that woke us, and at least the order we were balancing for
            if node.kswapd_highest_zoneidx == MAX_NR_ZONES:
                node.kswapd_highest_zoneidx = highest_zoneidx
            node.kswapd_order = max(node.kswapd_order, reclaim_order)
        await m.sched.get_cpu(task)
    if not premature and prepare_kswapd_sleep(m, node, reclaim_order, highest_zoneidx):
        m.emit("vmscan:mm_vmscan_kswapd_sleep", task.pid, node.nid)
        node.kswapd_waiter = m.sched.clock.waiter()
        node.kswapd_sleeping = True
        await m.sched.block_on(task, node.kswapd_waiter, "kswapd.sleep")
    node.kswapd_sleeping = False


async def balance_pgdat(m: "Machine", task: "Task", node: Node, order: int, highest_zoneidx: int) -> int:
    """Reclaim until some zone is above its HIGH watermark, raising the priority as needed."""
    sc = ScanControl(G.GFP_KERNEL, order, 0, highest_zoneidx, True)
    pflags = psi_memstall_enter(m, task)  # kswapd's balancing counts as a memory stall too
    try:
        balanced = await _balance(m, task, node, sc, highest_zoneidx)
    finally:
        psi_memstall_leave(m, task, pflags)
    snapshot_refaults(m, node)
    # a node found balanced ("goto out") is no failure, however little was reclaimed
    if not balanced and not sc.nr_reclaimed:
        node.kswapd_failures += 1
        m.emit("sim:kswapd_failures", task.pid, node.nid, node.kswapd_failures)
        if m.profile.kswapd_calls_oom:
            await kswapd_out_of_memory(m, task, node)
    return sc.order


async def _balance(m: "Machine", task: "Task", node: Node, sc: ScanControl, highest_zoneidx: int) -> bool:
    """balance_pgdat's loop: raise the priority until some zone is balanced.  True if it
    ended balanced, False if the priorities ran out."""
    passes = 0
    while sc.priority >= 1:
        if pgdat_balanced(m, node, sc.order, highest_zoneidx):
            if not passes:
                # "goto out" at once still cost the wakeup and the watermark checks: without
                # this, kswapd and the direct reclaimers throttled on pfmemalloc_wait (whose
                # test skips a balanced ZONE_DMA with nothing to reclaim) wake each other
                # with no time passing, and nothing else can change the node meanwhile
                await m.sched.run(task, params.RECLAIM_BASE_NS, "kswapd.scan")
            return True
        passes += 1
        before = sc.nr_reclaimed
        sc.nr_scanned = 0
        # kswapd_shrink_node: aim at the high watermarks; enough for compaction -> order 0
        sc.nr_to_reclaim = sum(max(z.high_wmark, SWAP_CLUSTER_MAX)
                               for z in node.zones if z.idx <= highest_zoneidx)
        await shrink_node(m, task, node, sc)
        if sc.order and sc.nr_reclaimed >= 2 << sc.order:
            sc.order = 0
        # raise the priority when this pass scanned too little or reclaimed nothing
        # throttled direct reclaimers may go on once the reserves are back
        wake_throttled(m, node)
        if sc.nr_scanned < sc.nr_to_reclaim or sc.nr_reclaimed == before:
            sc.priority -= 1
        await m.sched.point(task, "kswapd.scan")
    return False


async def kswapd_out_of_memory(m: "Machine", task: "Task", node: Node) -> None:
    """2.4: try_to_free_pages_zone() failing at every priority calls out_of_memory(), from
    kswapd as from anyone (its checklist decides whether anything is killed)."""
    from .oom_kill import OomControl, out_of_memory
    if not m.oom_lock_trylock(task, quiet=True):
        return
    try:
        await out_of_memory(m, task, OomControl(m.zonelists[node.nid], None, None, G.GFP_KERNEL, 0))
    finally:
        m.oom_lock_unlock(task)
