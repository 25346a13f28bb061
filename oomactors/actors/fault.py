"""Page faults of user tasks: a chunk at a time, under the mmap_lock (read).

:func:`fault_pages` is the general fault, waits included; :func:`fault_pages_nowait` the
common one that needs no coroutine; :func:`fault_chunks_nowait` a run of such faults
that no scheduling point separates, done in one pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..kernel import gfp as G
from ..kernel import params
from ..kernel.exit import mmap_read_lock
from ..kernel.memcontrol import charge_target, mem_cgroup_charge
from ..kernel.mempolicy import alloc_pages_policy, numa_node_id
from ..kernel.mmzone import MAX_ORDER
from ..kernel.page_alloc import rmqueue_pcp_run
from ..kernel.page_alloc_slow import __alloc_pages_nodemask, first_attempt
from ..kernel.task import MM, MMF_UNSTABLE, PAGE_SIZE, PTRS_PER_PTE, Task

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine

FAST_FAILED = "fast_failed"   # fault_pages_nowait: the allocator's first attempt failed


def fault_pages_nowait(m: "Machine", task: Task, mm: MM, nr: int, order: int, kind: str,
                       gfp_mask: int) -> Any:
    """:func:`fault_pages` when it cannot wait: the mmap_lock is free, no memcg is charged,
    no cpuset or mempolicy applies and the allocator's first attempt succeeds.  Returns the
    zone; None when those conditions do not hold, FAST_FAILED when only the first attempt
    failed -- and then nothing has changed: fault_pages does it all, waits included, and
    ``fast_failed=True`` tells it not to try that attempt again.  The common fault costs no
    coroutine."""
    if m.cpusets_enabled or task.mempolicy is not None or order >= MAX_ORDER \
            or charge_target(task, kind, gfp_mask) is not None:
        return None
    if kind not in ("anon", "shmem"):
        zone = first_attempt(m, task, gfp_mask, order, numa_node_id(m, task), None, nr, kind, mm, 0)
        return FAST_FAILED if zone is None else zone
    lock = mm.mmap_lock
    if not lock.read_trylock():
        return None
    zone = first_attempt(m, task, gfp_mask, order, numa_node_id(m, task), None, nr, kind, mm,
                         pt_needed(mm, nr << order))
    if zone is None:
        lock.readers -= 1  # as it was before the trylock: fault_pages takes it again
        return FAST_FAILED
    lock.read_unlock()
    return zone


def fault_chunks_nowait(m: "Machine", task: Task, mm: MM, nr: int, kind: str, gfp_mask: int,
                        limit: int, start: int, done: int, rate: int | None) -> int:
    """Up to ``limit`` faults of ``nr`` order-0 pages in a row for an alloc step begun at
    ``start`` with ``done`` pages done (paced by ``rate``), each as the step makes one when
    nothing waits: :func:`fault_pages_nowait` succeeds, its CPU time fits in the jiffy
    begun (``Sched.run_nowait``), no signal or memcg overage is pending on the way back to
    user space, and no fault before it was ahead of the rate.  No scheduling point comes
    between such faults and nothing else runs meanwhile, so they are made in one pass
    (:func:`~oomactors.kernel.page_alloc.rmqueue_pcp_run`), leaving the state and the
    events exactly as one at a time would.  The last may be ahead of the rate: a paced
    step makes a fault, then sleeps until its pages are due, so the caller paces after
    the run as after one fault.  It stops before the first fault that would go another
    way -- its CPU time ends the jiffy (the ``fault.cpu`` point), a fault before it was
    ahead of the rate, the allocator's first attempt would fail or take another zone --
    which the caller makes the ordinary way.  Returns the faults made; -1 when none was
    made because no zone passes the first attempt's watermark test, so that attempt fails
    (the caller goes straight to the slow path, as after :data:`FAST_FAILED`)."""
    clock = m.sched.clock
    ns = nr * params.FAULT_NS_PER_PAGE
    spare = (clock.jiffy_ns - 1 - task.cpu_debt_ns) // ns
    if spare < limit:
        limit = spare
    if rate:
        # the faults not ahead of the rate, then the first one that is (_pace comes after it)
        due = (pages_due(clock.now - start, rate, m.hz) - done) // nr
        due = due + 1 if due > 0 else 1
        if due < limit:
            limit = due
    if limit <= 0:  # (the cheapest test first: a paced step often has no fault to spare)
        return 0
    if (m.cpusets_enabled or task.mempolicy is not None or task.sigkill or task.sigterm
            or task.memcg_nr_pages_over_high or charge_target(task, kind, gfp_mask) is not None):
        return 0
    is_fault = kind in ("anon", "shmem")
    if is_fault:
        lock = mm.mmap_lock  # read_trylock and read_unlock, with nobody to wake, change nothing
        if lock.writer is not None or lock.waiters or (mm.flags & MMF_UNSTABLE and kind == "anon"):
            return 0
    nid = numa_node_id(m, task)
    ac = m.fast_acs[nid].get(gfp_mask)  # first_attempt's alloc_context (made by the first fault)
    if ac is None:
        return 0
    made = rmqueue_pcp_run(m, task, ac.zonelist, ac.highest_zoneidx, nr, limit, kind, mm, is_fault)
    if made > 0:  # their CPU time fits in the jiffy begun: limit was cut to it above
        m.sched.run_nowait(task, made * ns)
    return made


def pages_due(elapsed: int, rate: int, hz: int) -> int:
    """The most pages a step paced at ``rate`` bytes/s may have done ``elapsed`` jiffies
    after it began without _pace sleeping: the largest P with
    ``P * PAGE_SIZE * hz // rate <= elapsed`` (the pace test of user.py, solved for P)."""
    return ((elapsed + 1) * rate - 1) // (PAGE_SIZE * hz)


def pt_needed(mm: MM, got: int) -> int:
    """Page-table pages a fault of ``got`` more pages needs beyond those ``mm`` has (one
    per 512 mapped pages)."""
    return max(0, -(-(mm.mapped_pages() + got) // PTRS_PER_PTE) - sum(mm.pgtables))


async def fault_pages(m: "Machine", task: Task, mm: MM, nr: int, order: int, kind: str, gfp_mask: int,
                      new_pages: bool = True, *, fast_failed: bool = False) -> tuple[Any, int]:
    """Allocate and charge ``nr`` blocks of ``order`` for ``kind`` memory of ``mm``, under the
    mmap_lock for a fault.  Returns the zone, or None (-ENOMEM: a fault's VM_FAULT_OOM), and
    the pages kept (the memcg may take fewer: a dying task's last faults).  ``new_pages`` is
    False for a swap-in: the page table already maps the entry.  ``fast_failed``: the
    allocator's first attempt was just made, with nothing changed since, and failed
    (:func:`fault_pages_nowait`)."""
    got = nr << order
    is_fault = kind in ("anon", "shmem")
    if is_fault:
        if not mm.mmap_lock.read_trylock():  # mmap_read_lock, without a coroutine when free
            await mmap_read_lock(m, task, mm, "task.mmap_lock")
        pt = pt_needed(mm, got) if new_pages else 0
    else:
        pt = 0
    memcg = charge_target(task, kind, gfp_mask)
    try:
        # alloc_pages_vma (a fault) / alloc_pages_current: the task mempolicy's node and nodemask
        zone = await __alloc_pages_nodemask(m, task, gfp_mask, order,
                                            *alloc_pages_policy(m, task, gfp_mask, vma=is_fault),
                                            nr=nr, kind=kind if memcg is None else "kernel", mm=mm, pt=pt,
                                            fast_failed=fast_failed)
        # the memcg is charged once the page is allocated (mem_cgroup_charge in the fault;
        # __memcg_kmem_charge_page at the allocator's out: label for __GFP_ACCOUNT);
        # a failed charge frees the page.  do_anonymous_page charges with GFP_KERNEL.
        if zone is not None and memcg is not None:
            charge_gfp = G.GFP_KERNEL if kind == "anon" else gfp_mask
            got = await mem_cgroup_charge(m, task, memcg, zone, got, order, charge_gfp, kind, mm)
            if not got:
                zone = None
    finally:
        if is_fault:
            mm.mmap_lock.read_unlock()
    return zone, got

