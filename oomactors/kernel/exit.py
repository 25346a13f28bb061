"""Process exit (kernel/exit.c do_exit/exit_mm, mm/mmap.c exit_mmap, Linux 5.10)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import params
from .cow import cow_release
from .fork import release_task
from .oom_kill import exit_oom_victim
from .mmap import exit_mmap_unaccount
from .oom_reaper import __oom_reap_task_mm, unmap_file_pages, zap_pages
from .task import MMF_OOM_SKIP, MMF_OOM_VICTIM, PF_EXITING
from .workingset import forget_mm

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .task import MM, Task


async def mmap_read_lock(m: "Machine", cur: "Task", mm: "MM", point: str) -> None:
    if mm.mmap_lock.read_trylock():
        return
    w = m.sched.clock.waiter()
    mm.mmap_lock.waiters.append((cur, False, w))
    m.emit("sim:mmap_lock", cur.pid, "wait_read")
    await m.sched.block_on(cur, w, point)


async def mmap_write_lock(m: "Machine", cur: "Task", mm: "MM", point: str) -> None:
    if mm.mmap_lock.write_trylock(cur):
        return
    w = m.sched.clock.waiter()
    mm.mmap_lock.waiters.append((cur, True, w))
    m.emit("sim:mmap_lock", cur.pid, "wait_write")
    await m.sched.block_on(cur, w, point)


# include/asm-generic/tlb.h (6.1): a full-mm mmu_gather holds its 8-page bundle and up to
# MAX_GATHER_BATCH_COUNT (10000 / 510) batch pages of MAX_GATHER_BATCH (510) pages each
MMU_GATHER_PAGES = 8 + (10000 // 510) * 510


def mmu_gather_tail(mm: "MM") -> int:
    """Resident pages still in the gather when unmap_vmas ends: it is flushed (its pages
    freed) each time it fills."""
    return (sum(mm.anon) + sum(mm.shmem)) % MMU_GATHER_PAGES


async def exit_mmap(m: "Machine", cur: "Task", mm: "MM") -> None:
    """The last user is gone: unmap everything and give the pages back."""
    skip_after_unmap = m.profile.exit_mmap_skip_after_unmap
    if mm.flags & MMF_OOM_VICTIM and not skip_after_unmap:
        # reap the victim's memory ourselves, then tell the OOM killer to move on
        await __oom_reap_task_mm(m, cur, mm)
        if not mm.flags & MMF_OOM_SKIP:
            mm.flags |= MMF_OOM_SKIP
            m.emit("sim:mmf_oom_skip", cur.pid, "exit_mmap")
        # wait for a reaper that may still hold the lock for read
        await mmap_write_lock(m, cur, mm, "exit.mmap_lock")
        mm.mmap_lock.write_unlock()
    # 6.0+: unmap_vmas gathers the pages in a full-mm mmu_gather, which frees a batch only
    # when it is full: the last ones stay held until tlb_finish_mmu
    if skip_after_unmap:
        cow_release(m, mm)  # pages shared copy-on-write stay with the other side
    tail = mmu_gather_tail(mm) if skip_after_unmap else 0
    freed = await zap_pages(m, cur, mm, anon_only=False, point="exit.zap", keep=tail)
    if skip_after_unmap and not mm.flags & MMF_OOM_SKIP:
        # 6.0+: every VMA is unmapped; the OOM killer need not wait for this mm any more --
        # though the gathered pages are not free yet
        mm.flags |= MMF_OOM_SKIP
        if mm.flags & MMF_OOM_VICTIM:
            m.emit("sim:mmf_oom_skip", cur.pid, "exit_mmap")
    if tail:
        # the window 6.1's VM runs showed (a second victim killed while the first one's
        # gathered pages are still held): a decision point, and the CPU time below
        await m.sched.decision(cur, "exit.tlb_finish_mmu")
        # mmap_write_lock (a reaper may still hold it for read), free_pgtables, then
        # tlb_finish_mmu, whose work is done before its pages are back
        await mmap_write_lock(m, cur, mm, "exit.mmap_lock")
        mm.mmap_lock.write_unlock()
        await m.sched.run(cur, tail * params.ZAP_NS_PER_PAGE, "exit.zap")
        freed += await zap_pages(m, cur, mm, anon_only=False, point="exit.zap", charge=False)
    unmap_file_pages(m, mm)  # mapped page cache stays in the page cache
    for zone in m.zones:
        g = zone.gid
        pt = mm.pgtables[g]
        if pt:
            mm.pgtables[g] = 0
            zone.nr["pagetables"] -= pt
            m.free_to_buddy(cur, zone, pt)
            freed += pt
    mm.total_vm = 0
    # the VM_ACCOUNT mappings are gone: give their Committed_AS charge back
    exit_mmap_unaccount(m, mm)
    m.mms.discard(mm)
    forget_mm(m, mm)  # kernel/workingset.py: its shadows go with it
    m.emit("sim:exit_mm", cur.pid, cur.comm, freed)


async def exit_mm(m: "Machine", cur: "Task") -> None:
    mm = cur.mm
    if mm is None:
        return
    await mmap_read_lock(m, cur, mm, "exit.mmap_lock")
    cur.mm = None
    mm.users -= 1
    mm.mmap_lock.read_unlock()
    if mm.users == 0:
        await exit_mmap(m, cur, mm)
    if cur.memdie:
        exit_oom_victim(m, cur)


async def do_exit(m: "Machine", cur: "Task", reason: str) -> None:
    cur.flags |= PF_EXITING
    await exit_mm(m, cur)
    cur.dead = True
    cur.exit_reason = reason
    release_task(m, cur)
    m.emit("sched:sched_process_exit", cur.pid, cur.comm, reason)
    m.sched.put_cpu(cur)
    sig = cur.signal
    if not sig.live_threads():
        leader = sig.threads[0]
        if leader in m.proc_list:
            m.proc_list.remove(leader)
        outcome = "killed" if sig.group_exit else "exited"
        for t in sig.threads:
            t.outcome = outcome
        # a userspace daemon (oomactors/userspace.py) is a service: the run does not wait for it
        if not leader.is_kthread and not leader.is_global_init and not getattr(leader, "service", False):
            m.user_procs_alive -= 1
            if m.user_procs_alive <= 0:
                m.finished = True
