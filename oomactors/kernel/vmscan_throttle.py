"""pfmemalloc throttling of direct reclaim (mm/vmscan.c allow_direct_reclaim,
throttle_direct_reclaim, Linux 5.10).

When the free pages of a node's lowmem zones (ZONE_NORMAL and below) that still have
something to reclaim fall to half their min watermarks, direct reclaimers stop competing
with kswapd for the last reserves: they sleep on the node's ``pfmemalloc_wait`` until
kswapd has brought the free pages back above that line (or given the node up as hopeless),
and do not reclaim -- nor go OOM -- meanwhile.  kswapd wakes them from balance_pgdat as
soon as the test passes, and before it goes to sleep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import gfp as G
from .mmzone import MAX_RECLAIM_RETRIES, ZONE_NORMAL, Node

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .page_alloc import AllocContext
    from .task import Task


def allow_direct_reclaim(m: "Machine", node: Node) -> bool:
    """The node's lowmem free pages are above half their min watermarks (or there is
    nothing to protect); if not, kswapd is woken for ZONE_NORMAL at most."""
    if node.kswapd_failures >= MAX_RECLAIM_RETRIES:
        return True  # a hopeless node: leave it to direct reclaim (and the OOM killer)
    reserve = free = 0
    for zone in node.zones:
        if zone.idx > ZONE_NORMAL or not zone.managed:
            continue
        if not zone.zone_reclaimable_pages(m.swap_free):
            continue
        reserve += zone.min_wmark
        free += zone.nr_free
    if not reserve:
        return True  # no reserves: do not throttle
    wmark_ok = free > reserve // 2
    if not wmark_ok and node.kswapd_sleeping:
        # kswapd must be awake while processes are throttled
        if node.kswapd_highest_zoneidx > ZONE_NORMAL:
            node.kswapd_highest_zoneidx = ZONE_NORMAL
        node.kswapd_sleeping = False
        node.kswapd_waiter.wake("wake")
    return wmark_ok


def throttle_node(m: "Machine", cur: "Task", ac: "AllocContext") -> Node | None:
    """throttle_direct_reclaim's first test, without a coroutine (most reclaims pass it):
    the node whose pfmemalloc_wait ``cur`` must wait on, or None to go on reclaiming."""
    if cur.is_kthread or cur.fatal_signal_pending():
        return None  # kthreads may be cleaning pages; a dying task should just go
    for zone in ac.zones():
        if zone.idx > ZONE_NORMAL:
            continue
        # throttle on the first usable node only
        return None if allow_direct_reclaim(m, zone.node) else zone.node
    return None


async def throttle_direct_reclaim(m: "Machine", cur: "Task", gfp_mask: int, ac: "AllocContext",
                                  node: Node | None = None) -> bool:
    """Wait on the first usable node's pfmemalloc_wait while allow_direct_reclaim fails.
    True if a fatal signal arrived meanwhile: the caller then skips reclaim (and the OOM).
    ``node``: :func:`throttle_node` was asked already and named it."""
    if node is None:
        node = throttle_node(m, cur, ac)
        if node is None:
            return False
    m.vmstat["pgscan_direct_throttle"] += 1
    # without __GFP_FS the caller may hold a lock kswapd needs: wait one second at most
    deadline = None if gfp_mask & G.__GFP_FS else m.now + m.hz
    start = m.now
    while not allow_direct_reclaim(m, node) and not cur.fatal_signal_pending():
        if deadline is not None and m.now >= deadline:
            break
        w = m.sched.clock.waiter()
        node.pfmemalloc_wait.append(w)
        cur.wake_on_signal = w  # wait_event_killable
        if deadline is not None:
            m.sched.clock.add_sleeper(deadline, w)
        try:
            await m.sched.block_on(cur, w, "reclaim.throttle")
        finally:
            cur.wake_on_signal = None
            if w in node.pfmemalloc_wait:
                node.pfmemalloc_wait.remove(w)
    m.emit("sim:throttle", cur.pid, "pfmemalloc", m.now - start)
    return cur.fatal_signal_pending()


def wake_throttled(m: "Machine", node: Node, *, check: bool = True) -> None:
    """wake_up_all(&pgdat->pfmemalloc_wait): from balance_pgdat once allow_direct_reclaim
    passes (``check``), and unconditionally from prepare_kswapd_sleep."""
    if node.pfmemalloc_wait and (not check or allow_direct_reclaim(m, node)):
        waiters, node.pfmemalloc_wait = node.pfmemalloc_wait, []
        for w in waiters:
            w.wake("wake")
