"""The oom_reaper and address-space teardown (mm/oom_kill.c's reaper half, mm/mmap.c exit_mmap).

Both the reaper and an exiting victim unmap memory in batches, charging CPU time per page
and passing a scheduling point between batches, so a victim's memory comes back over
time and the two can race on the same mm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import params
from .cow import cow_release
from .memcontrol import uncharge_pages, uncharge_swap
from .task import MMF_OOM_SKIP, MMF_UNSTABLE

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .task import MM, Task

MAX_OOM_REAP_RETRIES = 10


def release_anon(m: "Machine", cur: "Task", mm: "MM", zone, k: int) -> None:
    """Unmap ``k`` resident anonymous pages of ``mm`` in ``zone`` and free them (uncharged)."""
    g = zone.gid
    mm.anon[g] -= k
    zone.nr["anon"] -= k
    if not mm.anon[g]:
        zone.anon_lru.pop(mm, None)
    m.free_to_buddy(cur, zone, k)
    uncharge_pages(mm, k)


async def zap_pages(m: "Machine", cur: "Task", mm: "MM", *, anon_only: bool, point: str,
                    keep: int = 0, charge: bool = True) -> int:
    """Unmap and free an mm's pages batch by batch; returns how many were freed.  ``keep``
    resident pages stay where they are (exit_mmap's mmu_gather tail, freed later);
    ``charge`` False: the caller already paid the CPU time."""
    cow_release(m, mm)  # pages shared copy-on-write stay with the other side
    freed = 0
    allow = None
    if keep:
        allow = max(0, sum(mm.anon) + (0 if anon_only else sum(mm.shmem)) - keep)
    while True:
        batch = params.ZAP_BATCH
        got = 0
        for zone in m.zones:
            g = zone.gid
            k = min(mm.anon[g], batch - got)
            if allow is not None:
                k = min(k, allow)
                allow -= k
            if k:
                release_anon(m, cur, mm, zone, k)
                got += k
            if anon_only:
                continue
            k = min(mm.shmem[g], batch - got)
            if allow is not None:
                k = min(k, allow)
                allow -= k
            if k:
                mm.shmem[g] -= k
                if not mm.shmem[g]:
                    zone.shmem_lru.pop(mm, None)
                zone.nr["shmem"] -= k
                m.free_to_buddy(cur, zone, k)
                uncharge_pages(mm, k)
                got += k
        # the shmem object goes with its creator's mm, swapped pages too
        if mm.shmem_swap and not anon_only and got < batch:
            k = min(mm.shmem_swap, batch - got)
            mm.shmem_swap -= k
            m.swap_free += k
            uncharge_swap(mm, k)
            got += k
        # swap entries go with the page tables that hold them
        if mm.swapents and got < batch:
            k = min(mm.swapents, batch - got)
            mm.swapents -= k
            m.swap_free += k
            uncharge_swap(mm, k)
            got += k
        if not got:
            return freed
        freed += got
        if charge:
            await m.sched.run(cur, got * params.ZAP_NS_PER_PAGE, point)
        await m.sched.point(cur, point)


def check_stable_address_space(m: "Machine", cur: "Task", mm: "MM", zone, nr: int) -> bool:
    """include/linux/oom.h: a fault that just got ``nr`` new anonymous pages for ``mm`` (from
    ``zone``) asks, before it maps them, whether the oom_reaper has begun to tear the mm down
    (MMF_UNSTABLE).  If so the fault fails with VM_FAULT_SIGBUS (True): the pages go back
    and the task -- a victim, SIGKILLed already -- dies on its way out.  Before "mm, oom: fix
    potential data corruption when oom_reaper races with writer" (6b31d5955cb2, 4.13) only
    kthreads borrowing the mm checked; a victim's own fault mapped a fresh zero-filled page
    where its data had been (False)."""
    if not mm.flags & MMF_UNSTABLE:
        return False
    sigbus = m.fixes.get("mmf_unstable", True)
    m.emit("sim:fault_unstable", cur.pid, cur.comm, nr, "sigbus" if sigbus else "mapped")
    if not sigbus:
        return False
    release_anon(m, cur, mm, zone, nr)
    return True


def unmap_file_pages(m: "Machine", mm: "MM") -> None:
    """Unmap an mm's mapped page cache: the pages stay in the page cache, mapped by nobody,
    charged to the memcg that faulted them."""
    for zone in m.zones:
        g = zone.gid
        k = mm.file[g]
        if k:
            cache = mm.memcg
            m.uncharge_file(zone, mm, k)
            zone.nr["file"] += k
            zone.file_owner[cache] = zone.file_owner.get(cache, 0) + k
            if cache is not None:
                cache.file[g] += k
            zone.file_lru.setdefault(cache, None)


async def __oom_reap_task_mm(m: "Machine", cur: "Task", mm: "MM") -> bool:
    """Tear down the anonymous and private (!VM_SHARED) mappings -- the model's mapped file
    pages are private ones -- but not shmem; faults would now see SIGBUS (MMF_UNSTABLE).
    The file pages stay in the page cache, so only the victim's file-rss drops."""
    mm.flags |= MMF_UNSTABLE
    await zap_pages(m, cur, mm, anon_only=True, point="reaper.zap")
    unmap_file_pages(m, mm)
    return True


async def oom_reap_task_mm(m: "Machine", reaper: "Task", tsk: "Task", mm: "MM") -> bool:
    if not mm.mmap_lock.read_trylock():
        m.emit("oom:skip_task_reaping", tsk.pid)
        return False
    try:
        # exit_mmap got there first: nothing left for us
        if mm.flags & MMF_OOM_SKIP:
            m.emit("oom:skip_task_reaping", tsk.pid)
            return True
        m.emit("oom:start_task_reaping", tsk.pid)
        ret = await __oom_reap_task_mm(m, reaper, mm)
        if ret:
            m.emit("sim:reaper_reaped", tsk.pid, tsk.comm, mm.rss_anon * 4, mm.rss_file * 4,
                   mm.rss_shmem * 4)
        m.emit("oom:finish_task_reaping", tsk.pid)
        return ret
    finally:
        mm.mmap_lock.read_unlock()


async def oom_reap_task(m: "Machine", reaper: "Task", tsk: "Task") -> None:
    """Up to ten trylocks HZ/10 apart; MMF_OOM_SKIP is set whether we reaped or gave up."""
    mm = tsk.signal.oom_mm
    reaped = False
    for _ in range(MAX_OOM_REAP_RETRIES):
        if await oom_reap_task_mm(m, reaper, tsk, mm):
            reaped = True
            break
        await m.sched.sleep(reaper, max(1, m.hz // 10), "reaper.retry_sleep")
    if not reaped and not mm.flags & MMF_OOM_SKIP:
        m.emit("sim:reaper_unable", tsk.pid, tsk.comm)
    tsk.oom_reaper_list = False
    if not mm.flags & MMF_OOM_SKIP:
        mm.flags |= MMF_OOM_SKIP
        m.emit("sim:mmf_oom_skip", tsk.pid, "oom_reaper")
