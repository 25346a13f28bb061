"""Kernel threads as actors: kswapd (one per node), the oom_reaper, and the per-CPU timer.

They are thin loops; every decision lives in the kernel functions they call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..kernel.mmzone import MAX_NR_ZONES, Node
from ..kernel.oom_reaper import oom_reap_task
from ..kernel.task import PF_KSWAPD, PF_MEMALLOC
from ..kernel.vmscan_kswapd import balance_pgdat, kswapd_try_to_sleep

if TYPE_CHECKING:  # pragma: no cover
    from ..kernel.task import Task
    from ..machine import Machine
    from ..sched import CPU


def _kswapd_highest_zoneidx(node: Node, prev: int) -> int:
    z = node.kswapd_highest_zoneidx
    return prev if z == MAX_NR_ZONES else z


async def kswapd(m: "Machine", node: Node) -> None:
    """Sleep until woken below the low watermark, then balance the node up to HIGH."""
    task: Task = node.kswapd_task
    task.flags |= PF_MEMALLOC | PF_KSWAPD
    await m.sched.get_cpu(task)
    alloc_order = reclaim_order = 0
    highest_zoneidx = MAX_NR_ZONES - 1
    retry_sleep = False
    while True:
        if not retry_sleep:
            alloc_order = reclaim_order = node.kswapd_order
            highest_zoneidx = _kswapd_highest_zoneidx(node, highest_zoneidx)
        # kswapd_try_sleep:
        await kswapd_try_to_sleep(m, task, node, reclaim_order, highest_zoneidx)
        # read the (possibly raised) request, then reset it for the next wakeup
        alloc_order = reclaim_order = node.kswapd_order
        highest_zoneidx = _kswapd_highest_zoneidx(node, highest_zoneidx)
        node.kswapd_order = 0
        node.kswapd_highest_zoneidx = MAX_NR_ZONES
        m.emit("vmscan:mm_vmscan_kswapd_wake", task.pid, node.nid, highest_zoneidx, alloc_order)
        reclaim_order = await balance_pgdat(m, task, node, alloc_order, highest_zoneidx)
        # balanced only for a lower order: try to sleep for that order (goto kswapd_try_sleep)
        retry_sleep = reclaim_order < alloc_order


async def oom_reaper(m: "Machine", task: "Task") -> None:
    """Reap queued victims one at a time, newest first."""
    await m.sched.get_cpu(task)
    while True:
        while not m.oom_reaper_list:
            m.oom_reaper_wait = m.sched.clock.waiter()
            await m.sched.block_on(task, m.oom_reaper_wait, "reaper.wait")
        tsk = m.oom_reaper_list.pop(0)
        await oom_reap_task(m, task, tsk)


async def vmstat_timer(m: "Machine", cpu: "CPU") -> None:
    """vmstat_update: fold the CPU's counter drift once a second."""
    while True:
        await m.sched.clock.sleep_until(m.now + m.hz)
        m.sched.point_hits["cpu.vmstat"] += 1
        m.fold_vmstat(cpu)
