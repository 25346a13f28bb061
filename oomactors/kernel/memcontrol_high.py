"""memory.high (cgroup v2, mm/memcontrol.c, 5.10): a charge above it does not fail; the
task reclaims from every memcg over its high on the way back to user space
(mem_cgroup_handle_over_high) and sleeps off a penalty, quadratic in the overage, when
reclaim cannot keep up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import gfp as G
from .memcontrol_tree import MemCgroup, get_mem_cgroup_from_mm, memcg_memory_event
from .mmzone import MAX_RECLAIM_RETRIES, SWAP_CLUSTER_MAX
from ..psi import psi_memstall_enter, psi_memstall_leave

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .task import Task

MEMCG_CHARGE_BATCH = 32
MEMCG_DELAY_PRECISION_SHIFT = 20
MEMCG_DELAY_SCALING_SHIFT = 14


async def reclaim_high(m: "Machine", cur: "Task", memcg: MemCgroup, nr_pages: int, gfp_mask: int) -> int:
    from .vmscan_memcg import try_to_free_mem_cgroup_pages
    nr_reclaimed = 0
    c: MemCgroup | None = memcg
    while c is not None and not c.is_root:
        if c.memory.usage > c.memory.high:
            memcg_memory_event(m, c, "high", cur.pid)
            pflags = psi_memstall_enter(m, cur)
            try:
                nr_reclaimed += await try_to_free_mem_cgroup_pages(m, cur, c, nr_pages, gfp_mask, True)
            finally:
                psi_memstall_leave(m, cur, pflags)
        c = c.parent
    return nr_reclaimed


def calculate_overage(usage: int, high: int) -> int:
    if usage <= high:
        return 0
    high = max(high, 1)  # act as if the threshold were one page
    return ((usage - high) << MEMCG_DELAY_PRECISION_SHIFT) // high


def mem_find_max_overage(memcg: MemCgroup) -> int:
    max_overage = 0
    c: MemCgroup | None = memcg
    while c is not None and not c.is_root:
        max_overage = max(max_overage, calculate_overage(c.memory.usage, c.memory.high))
        c = c.parent
    return max_overage


def calculate_high_delay(nr_pages: int, max_overage: int, hz: int) -> int:
    """Jiffies of penalty: quadratic in the overage, scaled by this task's share of it."""
    if not max_overage:
        return 0
    penalty = max_overage * max_overage * hz
    penalty >>= MEMCG_DELAY_PRECISION_SHIFT
    penalty >>= MEMCG_DELAY_SCALING_SHIFT
    return penalty * nr_pages // MEMCG_CHARGE_BATCH


async def mem_cgroup_handle_over_high(m: "Machine", cur: "Task") -> None:
    """On the way back to user space after charges above memory.high: reclaim, and sleep
    off a penalty (at most MEMCG_MAX_HIGH_DELAY_JIFFIES = 2 s) if reclaim cannot keep up."""
    nr_pages = cur.memcg_nr_pages_over_high
    if not nr_pages:
        return
    memcg = get_mem_cgroup_from_mm(cur)
    cur.memcg_nr_pages_over_high = 0
    if memcg is None or memcg.is_root:
        return
    nr_retries = MAX_RECLAIM_RETRIES
    in_retry = False
    while True:  # retry_reclaim:
        # the allocator reclaims its batch first; retries only what prevents an OOM
        nr_reclaimed = await reclaim_high(m, cur, memcg, SWAP_CLUSTER_MAX if in_retry else nr_pages,
                                          G.GFP_KERNEL)
        penalty = calculate_high_delay(nr_pages, mem_find_max_overage(memcg), m.hz)
        # (swap.high is not modelled: no swap overage term)
        penalty = min(penalty, 2 * m.hz)
        if penalty <= m.hz // 100:
            return  # too little to bother sleeping for
        # reclaim still makes progress: prefer it to throttling
        if nr_reclaimed:
            in_retry = True
            continue
        if nr_retries:
            nr_retries -= 1
            in_retry = True
            continue
        break
    m.emit("sim:throttle", cur.pid, "memcg_high", penalty)
    pflags = psi_memstall_enter(m, cur)  # the penalty sleep is a memory stall
    try:
        await m.sched.sleep(cur, penalty, "memcg.high_throttle", interruptible=True)  # killable
    finally:
        psi_memstall_leave(m, cur, pflags)
