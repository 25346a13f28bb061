"""User tasks' page-cache and working-set steps: ``touch_file`` (read or write a file
through the page cache) and ``access`` (sweep a working set again and again, faulting
back what reclaim evicted: docs/thrashing.md), with the page-cache allocation they share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import AccessStep, TouchFileStep
from ..kernel import gfp as G
from ..kernel import params
from ..kernel.lru import add_new
from ..kernel.memcontrol import charge_target, mem_cgroup_charge, mem_cgroup_handle_over_high
from ..kernel.memory import (do_swap_page, filemap_read, filemap_refault, mark_resident_accessed,
                             wait_on_read)
from ..kernel.mempolicy import alloc_pages_policy
from ..kernel.mmap import mmap_region
from ..kernel.page_alloc_slow import __alloc_pages_nodemask
from ..kernel.task import MM, PAGE_SIZE, Task
from ..kernel.workingset import workingset_refault
from .fault import fault_pages
from .user_return import _enomem, _pace, ret_to_user, vm_fault_oom

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine


async def _touch_file(m: "Machine", task: Task, step: TouchFileStep) -> None:
    pages = step.size // PAGE_SIZE
    m.emit("sim:step", task.pid, "touch_file", pages)
    kind = "dirty" if step.dirty else "file"
    owner = task.mm if step.mapped and not step.dirty else None
    if owner is not None:
        task.mm.total_vm += pages
    if owner is None and kind == "file" and task.memcg is not None:
        owner = task.memcg  # unmapped page cache stays charged to the reader's memcg
    memcg = charge_target(task, kind, G.GFP_HIGHUSER_MOVABLE, owner)
    charge_gfp = G.GFP_HIGHUSER_MOVABLE if step.mapped else G.GFP_HIGHUSER_MOVABLE & G.GFP_KERNEL
    done = 0
    start = m.now
    while done < pages:
        nr = min(32, pages - done)
        zone, nr = await page_cache_alloc(m, task, owner, memcg, nr, kind, charge_gfp)
        if zone is None:
            await vm_fault_oom(m, task)
            continue
        if kind == "file":
            # reading back what reclaim evicted: refaults within the working set go
            # straight to the active list (the read itself costs no IO in the model)
            activated = workingset_refault(m, owner, nr)[1]
            if activated:
                add_new(zone, "file", owner, activated, active=True, referenced=True)
        done += nr
        await m.sched.run(task, nr * params.FAULT_NS_PER_PAGE, "fault.cpu")
        ret_to_user(task)
        if task.memcg_nr_pages_over_high:
            await mem_cgroup_handle_over_high(m, task)  # set_notify_resume work
            ret_to_user(task)
        if step.rate:
            await _pace(m, task, start, done, step.rate)


async def page_cache_alloc(m: "Machine", task: Task, owner: Any, memcg: Any, nr: int, kind: str,
                           charge_gfp: int = G.GFP_HIGHUSER_MOVABLE) -> tuple[Any, int]:
    """__page_cache_alloc of ``nr`` pages for ``owner`` and their memcg charge: the zone (None
    on failure) and the pages kept.  read(2) charges with mapping_gfp_constraint(mapping,
    GFP_KERNEL); a fault with the mapping's mask."""
    zone = await __alloc_pages_nodemask(m, task, G.GFP_HIGHUSER_MOVABLE, 0,
                                        *alloc_pages_policy(m, task, G.GFP_HIGHUSER_MOVABLE, vma=False),
                                        nr=nr, kind=kind if memcg is None else "kernel",
                                        mm=owner if memcg is None else None)
    # add_to_page_cache_lru charges the new page to the memcg; failure frees it
    if zone is not None and memcg is not None:
        nr = await mem_cgroup_charge(m, task, memcg, zone, nr, 0, charge_gfp, kind, owner)
        if not nr:
            zone = None
    return zone, nr


async def _access(m: "Machine", task: Task, step: AccessStep) -> None:
    """Sweep a working set of ``step.size`` bytes again and again (docs/thrashing.md).

    The first sweep maps and faults the pages in.  Later sweeps find part of the set evicted
    -- which part is not known page by page, so each chunk meets the evicted pages in
    proportion to the set's evicted share; the set is taken to be the last of its mm's
    memory to go (cold pages are evicted first) -- and fault those back (swap-in or a read
    from disk, with the IO wait), while the resident ones are marked accessed."""
    mm = task.mm
    pages = -(-step.size // PAGE_SIZE)  # a working set is whole pages
    kind = step.kind
    m.emit("sim:step", task.pid, "access", pages)
    if kind == "file":
        mm.total_vm += pages  # a file mapping: no commit charge
    else:
        while mmap_region(m, task, mm, pages, kind):
            if await _enomem(m, task, "access", step.on_fail):
                return
    faulted = 0     # pages of the set faulted in at least once (the first sweep's progress)
    touched = 0     # pages touched by this step, for the rate
    start = m.now
    sweep = 0
    while step.repeat is None or sweep < step.repeat:
        sweep += 1
        done = 0
        while done < pages:
            nr = min(step.chunk, pages - done)
            if done >= faulted:
                ok = await _access_new(m, task, mm, kind, nr)
                faulted += ok
            else:
                resident = mm.rss_anon if kind == "anon" else mm.rss_file if kind == "file" else faulted
                out = max(0, faulted - resident)
                if kind == "anon":
                    out = min(out, mm.swapents)
                evicted = (done + nr) * out // faulted - done * out // faulted
                if nr - evicted and kind != "shmem":
                    mark_resident_accessed(m, kind, mm, nr - evicted)
                await m.sched.run(task, (nr - evicted) * params.ACCESS_NS_PER_PAGE, "task.access")
                ok = nr
                if evicted and not await _fault_back(m, task, mm, kind, evicted):
                    ok = 0
            if not ok:
                continue  # VM_FAULT_OOM: back to user space, then the same chunk again
            done += nr
            touched += nr
            ret_to_user(task)
            if step.rate:
                await _pace(m, task, start, touched, step.rate)
        # a sweep that never sleeps must still let time pass
        await m.sched.run(task, params.SLOWPATH_ROUND_NS, "task.compute")


async def _access_new(m: "Machine", task: Task, mm: MM, kind: str, nr: int) -> int:
    """First touch of ``nr`` pages of the set: a zero-fill (anon, shmem) or a read from
    disk (file).  Returns ``nr``, or 0 after a VM_FAULT_OOM."""
    if kind == "file":
        memcg = charge_target(task, "file", G.GFP_HIGHUSER_MOVABLE, mm)
        zone, nr = await page_cache_alloc(m, task, mm, memcg, nr, "file")
    else:
        zone, nr = await fault_pages(m, task, mm, nr, 0, kind, G.GFP_HIGHUSER_MOVABLE)
    if zone is None:
        await vm_fault_oom(m, task)
        return 0
    mm.last_active = m.now
    await m.sched.run(task, nr * params.FAULT_NS_PER_PAGE, "fault.cpu")
    if kind == "file":
        filemap_read(m, task, mm, zone, nr)
        await wait_on_read(m, task, m.writeback_io, nr, "read", False)
    elif kind == "anon":
        add_new(zone, kind, mm, nr, active=False, referenced=True)  # the PTE is young
    return nr


async def _fault_back(m: "Machine", task: Task, mm: MM, kind: str, nr: int) -> int:
    """Fault ``nr`` evicted pages of the set back: swap-in (anon) or a page-cache refault
    (file), each waiting for its read.  Returns ``nr``, or 0 after a VM_FAULT_OOM."""
    if kind == "anon":
        nr = min(nr, mm.swapents)
        if not nr:
            return 1  # nothing left in swap to read (freed meanwhile)
        zone, nr = await fault_pages(m, task, mm, nr, 0, "anon", G.GFP_HIGHUSER_MOVABLE, new_pages=False)
    else:
        memcg = charge_target(task, "file", G.GFP_HIGHUSER_MOVABLE, mm)
        zone, nr = await page_cache_alloc(m, task, mm, memcg, nr, "file")
    if zone is None:
        await vm_fault_oom(m, task)
        return 0
    if kind == "anon":
        _, _, restored = do_swap_page(m, task, mm, zone, nr)
        device, why = m.swap_io, "swapin"
    else:
        _, _, restored = filemap_refault(m, task, mm, zone, nr)
        device, why = m.writeback_io, "refault"
    await m.sched.run(task, nr * params.FAULT_NS_PER_PAGE, "fault.cpu")
    await wait_on_read(m, task, device, nr, why, restored > 0)
    return nr
