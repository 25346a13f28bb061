"""Charging memory cgroups, cgroup v2 semantics (mm/memcontrol.c, include/linux/memcontrol.h, 5.10).

A :class:`MemCgroup` tree with page counters (:mod:`.page_counter`).  Charging a child charges every ancestor
(``page_counter_try_charge`` walks up to the root); the lowest counter that would pass its
``max`` is the one reclaimed from and, if reclaim fails, the one whose OOM killer runs.

What is charged (cgroup v2, 5.10):

* anonymous and shmem pages faulted into an mm: to the memcg of the mm's owner, *after* the
  page was allocated (``mem_cgroup_charge`` in the fault path); on failure the page is freed
  and the fault returns VM_FAULT_OOM;
* clean page cache: to the memcg of the task that read it; it stays charged there when the
  mapping goes away, until reclaim frees it.  Unmapped page cache of a memcg sits on the
  file LRU under the memcg itself as owner (``MemCgroup.file`` are its per-zone pages);
* kernel allocations only with ``__GFP_ACCOUNT`` (``__memcg_kmem_charge_page``);
* swap: an anonymous page that reclaim writes to swap moves its charge from ``memory`` to
  ``swap`` (v2 has separate counters); swap.max bounds what reclaim may swap.

The try_charge branch order is 5.10's, read from mm/memcontrol.c of 5.10.13
(Rtoax/linux-5.10.13): ``__GFP_ATOMIC``, ``should_force_charge()`` (OOM victim, fatal signal,
PF_EXITING) and PF_MEMALLOC force the charge; a non-blocking mask fails; otherwise MEMCG_MAX,
``try_to_free_mem_cgroup_pages``, margin check, one drain of the per-CPU stock, NORETRY,
"reclaimed something and small", MAX_RECLAIM_RETRIES, RETRY_MAYFAIL, NOFAIL and fatal signal
(force), then ``mem_cgroup_oom``: OOM_SUCCESS retries with fresh retries, OOM_FAILED (nothing
killable) goes to ``force`` -- 5.10 charges over the limit rather than fail the fault
(the profile's ``memcg_oom_failure``; 5.16+ fails with -ENOMEM instead).

The tree itself (struct mem_cgroup, the walks, memory.events, what the OOM killer reads of
a memcg) is :mod:`.memcontrol_tree`, memory.high :mod:`.memcontrol_high`; both are
re-exported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import gfp as G
from .mmzone import MAX_RECLAIM_RETRIES, PAGE_ALLOC_COSTLY_ORDER
from .page_counter import page_counter_charge, page_counter_try_charge, page_counter_uncharge
from .task import MM, PF_EXITING, PF_MEMALLOC
from ..psi import psi_memstall_enter, psi_memstall_leave
# the tree and memory.high, re-exported: `from .memcontrol import ...` is the public face
from .memcontrol_high import (MEMCG_CHARGE_BATCH, MEMCG_DELAY_PRECISION_SHIFT, MEMCG_DELAY_SCALING_SHIFT,
                              calculate_high_delay, calculate_overage, mem_cgroup_handle_over_high,
                              mem_find_max_overage, reclaim_high)
from .memcontrol_tree import (MEMCG_EVENTS, PAGE_COUNTER_MAX, MemCgroup, build_memcgs, emit_memcg_usage,
                              for_each_mem_cgroup_tree, get_mem_cgroup_from_mm, mem_cgroup_get_oom_group,
                              mem_cgroup_is_descendant, mem_cgroup_print_oom_meminfo, mem_cgroup_scan_tasks,
                              memcg_count_scan, memcg_memory_event, memcg_memory_event_mm, memcg_of,
                              parent_mem_cgroup, task_memcg_path)

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .mmzone import Zone
    from .task import Task

__all__ = ["ENOMEM", "MEMCG_CHARGE_BATCH", "MEMCG_DELAY_PRECISION_SHIFT", "MEMCG_DELAY_SCALING_SHIFT", "MEMCG_EVENTS",
           "OOM_ASYNC", "OOM_FAILED", "OOM_SKIPPED", "OOM_SUCCESS", "PAGE_COUNTER_MAX", "MemCgroup", "boot_charge",
           "build_memcgs", "calculate_high_delay", "calculate_overage", "charge_room", "charge_target",
           "emit_memcg_usage", "for_each_mem_cgroup_tree", "get_mem_cgroup_from_mm", "mem_cgroup_charge",
           "mem_cgroup_get_nr_swap_pages", "mem_cgroup_get_oom_group", "mem_cgroup_handle_over_high",
           "mem_cgroup_is_descendant", "mem_cgroup_margin", "mem_cgroup_oom", "mem_cgroup_out_of_memory",
           "mem_cgroup_print_oom_meminfo", "mem_cgroup_scan_tasks", "mem_cgroup_swapout", "memcg_count_scan",
           "memcg_memory_event", "memcg_memory_event_mm", "memcg_of", "mem_find_max_overage", "parent_mem_cgroup",
           "reclaim_high", "should_force_charge", "swap_room", "task_memcg_path", "try_charge", "uncharge_pages",
           "uncharge_swap"]

ENOMEM = 12

# enum oom_status
OOM_SUCCESS, OOM_FAILED, OOM_ASYNC, OOM_SKIPPED = range(4)


# --- charging ---------------------------------------------------------------------------------
def mem_cgroup_margin(memcg: MemCgroup) -> int:
    """How many pages fit under this memcg's own max (ancestors are not looked at)."""
    mem = memcg.memory
    return mem.max - mem.usage if mem.usage < mem.max else 0


def should_force_charge(cur: "Task") -> bool:
    """Dying tasks bypass the limit so they can exit quickly and free their memory."""
    return cur.tsk_is_oom_victim() or cur.fatal_signal_pending() or bool(cur.flags & PF_EXITING)


def _force(m: "Machine", cur: "Task", memcg: MemCgroup, nr_pages: int, why: str) -> int:
    m.emit("sim:memcg_force_charge", cur.pid, memcg.path, nr_pages, why, memcg.memory.usage + nr_pages)
    page_counter_charge(memcg.memory, nr_pages)
    return 0


def _done_restock(cur: "Task", memcg: MemCgroup, batch: int) -> None:
    """Above memory.high somewhere up the tree: reclaim and throttle on the way back to
    user space (set_notify_resume), never here."""
    c: MemCgroup | None = memcg
    while c is not None:
        if c.memory.usage > c.memory.high:
            cur.memcg_nr_pages_over_high += batch
            return
        c = c.parent


def charge_room(memcg: MemCgroup, want: int, page_nr: int) -> int:
    """How many of ``want`` pages, in whole pages of ``page_nr``, fit under the max of the
    memcg and of every ancestor."""
    room = want
    for c in memcg.memory.chain():
        room = min(room, max(0, c.max - c.usage))
    return room - room % page_nr


async def try_charge(m: "Machine", cur: "Task", memcg: MemCgroup, gfp_mask: int, nr_pages: int,
                     order: int = 0) -> int:
    """5.10's try_charge of one page of ``order`` (``nr_pages`` pages): 0 or -ENOMEM.  The
    per-CPU stock's batch is not modelled: the request is charged exactly."""
    from .vmscan_memcg import try_to_free_mem_cgroup_pages
    page_nr = 1 << order
    nr_retries = MAX_RECLAIM_RETRIES
    may_swap = True
    drained = False
    while True:  # retry:
        # consume_stock: the model keeps no per-CPU charge stock (batch == nr_pages)
        counter = page_counter_try_charge(memcg.memory, nr_pages)
        if counter is None:
            _done_restock(cur, memcg, nr_pages)
            return 0
        mem_over_limit = counter.memcg
        # atomic allocations have no reserve here: let them through, regular ones pay
        if gfp_mask & G.__GFP_ATOMIC:
            return _force(m, cur, memcg, nr_pages, "atomic")
        # not a physical shortage: let dying and OOM-killed tasks exit quickly
        if should_force_charge(cur):
            return _force(m, cur, memcg, nr_pages, "dying")
        # reclaim allocating memory must not recurse into reclaim
        if cur.flags & PF_MEMALLOC:
            return _force(m, cur, memcg, nr_pages, "memalloc")
        # task_in_memcg_oom(): the cgroup v1 deferred OOM, not in v2
        if not G.gfpflags_allow_blocking(gfp_mask):
            return _nomem(m, cur, memcg, gfp_mask, nr_pages, "nonblocking")
        memcg_memory_event(m, mem_over_limit, "max", cur.pid)
        pflags = psi_memstall_enter(m, cur)  # reclaim at the limit is a memory stall
        try:
            nr_reclaimed = await try_to_free_mem_cgroup_pages(m, cur, mem_over_limit, nr_pages, gfp_mask,
                                                              may_swap)
        finally:
            psi_memstall_leave(m, cur, pflags)
        if mem_cgroup_margin(mem_over_limit) >= nr_pages:
            continue
        if not drained:
            drained = True  # drain_all_stock(): nothing is stocked in the model
            continue
        if gfp_mask & G.__GFP_NORETRY:
            return _nomem(m, cur, memcg, gfp_mask, nr_pages, "noretry")
        # reclaim freed something: retry before killing, but only for regular pages
        if nr_reclaimed and page_nr <= (1 << PAGE_ALLOC_COSTLY_ORDER):
            continue
        # mem_cgroup_wait_acct_move(): charge moving is cgroup v1 only
        if nr_retries:
            nr_retries -= 1
            continue
        if gfp_mask & G.__GFP_RETRY_MAYFAIL:
            return _nomem(m, cur, memcg, gfp_mask, nr_pages, "retry_mayfail")
        if gfp_mask & G.__GFP_NOFAIL:
            return _force(m, cur, memcg, nr_pages, "nofail")
        if cur.fatal_signal_pending():
            return _force(m, cur, memcg, nr_pages, "fatal_signal")
        # keep retrying while the memcg OOM killer makes progress; bypass the limit if it
        # could not (5.10) -- or fail the charge (the profile says which)
        oom_status = await mem_cgroup_oom(m, cur, mem_over_limit, gfp_mask, order, nr_pages)
        if oom_status == OOM_SUCCESS:
            nr_retries = MAX_RECLAIM_RETRIES
            continue
        if oom_status == OOM_FAILED and m.profile.memcg_oom_failure == "force":
            return _force(m, cur, memcg, nr_pages, "oom_failed")
        return _nomem(m, cur, memcg, gfp_mask, nr_pages, "oom_skipped" if oom_status == OOM_SKIPPED else "oom_failed")


def _nomem(m: "Machine", cur: "Task", memcg: MemCgroup, gfp_mask: int, nr_pages: int, why: str) -> int:
    if gfp_mask & G.__GFP_NOFAIL:
        return _force(m, cur, memcg, nr_pages, "nofail")
    m.emit("sim:memcg_charge_failed", cur.pid, memcg.path, nr_pages, why, memcg.memory.usage)
    return -ENOMEM


async def mem_cgroup_oom(m: "Machine", cur: "Task", memcg: MemCgroup, gfp_mask: int, order: int,
                         nr_pages: int) -> int:
    if order > PAGE_ALLOC_COSTLY_ORDER:
        return OOM_SKIPPED  # the OOM killer will not help higher order charges
    memcg_memory_event(m, memcg, "oom", cur.pid)
    # memory.oom_control's oom_kill_disable, the under_oom marks and the memcg OOM trylock
    # only serve cgroup v1 (userspace handlers, eventfd notification): nothing to do in v2
    if await mem_cgroup_out_of_memory(m, cur, memcg, gfp_mask, order, nr_pages):
        return OOM_SUCCESS
    return OOM_FAILED


async def mem_cgroup_out_of_memory(m: "Machine", cur: "Task", memcg: MemCgroup, gfp_mask: int, order: int,
                                   nr_pages: int) -> bool:
    """The same oom_lock as the page allocator's, but waited for (mutex_lock_killable)."""
    from .oom_kill import OomControl, out_of_memory
    oc = OomControl([], None, memcg, gfp_mask, order)
    # 5.1 "memcg: killed threads should not invoke memcg OOM killer": the wait is killable
    # and a task that is dying by the time it has the lock lets its charge through; before
    # it (the switch off), a killed thread waited uninterruptibly and went on to kill
    dying_bypass = m.fixes.get("memcg_dying_bypass", True)
    if not await m.oom_lock_lock(cur, killable=dying_bypass):
        m.branches["memcg oom: dying at oom_lock"] += 1
        return True  # a fatal signal: we are dying, let the charge bypass the limit
    dying = should_force_charge(cur)   # nothing below awaits before the second look uses it
    if dying:
        m.branches["memcg oom: dying at oom_lock"] += 1   # the race's moment, fix on or off
    try:
        # a parallel OOM may have made room while we waited (the model asks for the bulk):
        # "memcg, oom: check memcg margin for parallel oom" (5.9); before it, a waiter went
        # on to out_of_memory and could pick a second victim for one overrun
        if m.fixes.get("memcg_oom_margin", True) and mem_cgroup_margin(memcg) >= nr_pages:
            return True
        # a few threads that were not waiting on the lock can fail to bail out: check again
        if dying_bypass and dying:
            return True
        m.memcg_oom_charge[cur.pid] = (memcg, nr_pages)  # what this OOM is about, for checkers
        try:
            return await out_of_memory(m, cur, oc)
        finally:
            del m.memcg_oom_charge[cur.pid]
    finally:
        m.oom_lock_unlock(cur)


async def mem_cgroup_charge(m: "Machine", cur: "Task", memcg: MemCgroup | None, zone: "Zone", nr: int,
                            order: int, gfp_mask: int, kind: str, owner: Any) -> int:
    """Charge pages that were just allocated (held as ``kernel`` pages meanwhile) and put them
    where they belong (``kind`` of ``owner``); the pages that could not be charged are freed.
    Returns how many pages the caller keeps: 0 is -ENOMEM (a fault returns VM_FAULT_OOM).

    A chunk stands for one fault per page, each charging its own page: the pages that fit
    are charged as their faults would be (try_charge falls back from the batch to the exact
    request), and only the page that finds no room reclaims, goes OOM or is forced.  A task
    let past the limit because it is dying gets that one page and no more: it dies on its
    way back to user space, before its next fault."""
    if memcg is None or memcg.is_root:
        _commit_charge(m, None, zone, nr, kind, owner)
        return nr
    page_nr = 1 << order
    kept = 0
    while kept < nr:
        room = charge_room(memcg, nr - kept, page_nr)
        if room:
            page_counter_charge(memcg.memory, room)
            _done_restock(cur, memcg, room)
            _commit_charge(m, memcg, zone, room, kind, owner)
            kept += room
            continue
        if await try_charge(m, cur, memcg, gfp_mask, page_nr, order):
            break
        _commit_charge(m, memcg, zone, page_nr, kind, owner)
        kept += page_nr
        if should_force_charge(cur):
            break
    if kept < nr:
        zone.nr["kernel"] -= nr - kept
        m.free_to_buddy(cur, zone, nr - kept)
    return kept


def _commit_charge(m: "Machine", memcg: MemCgroup | None, zone: "Zone", nr: int, kind: str, owner: Any) -> None:
    """commit_charge: the charged pages join their owner's books (no event in between)."""
    if kind == "kernel":
        if memcg is not None and not memcg.is_root:
            memcg.kmem += nr  # __memcg_kmem_charge_page: the page stays a kernel page
    else:
        zone.nr["kernel"] -= nr
        m.charge(zone, kind, owner, nr)


def charge_target(cur: "Task", kind: str, gfp_mask: int, owner: Any = None) -> MemCgroup | None:
    """Which memcg pages of ``kind`` are charged to, or None when they are not charged."""
    if kind in ("anon", "shmem"):
        memcg = cur.mm.memcg if cur.mm is not None else None
    elif kind == "file":
        memcg = memcg_of(owner) if owner is not None else cur.memcg
    elif kind == "kernel":
        memcg = cur.memcg if gfp_mask & G.__GFP_ACCOUNT else None
    else:
        memcg = None  # dirty page cache is not charged in the model
    return memcg if memcg is not None and not memcg.is_root else None


def boot_charge(memcg: MemCgroup | None, nr_pages: int) -> None:
    """Memory a task already holds when the run starts (the config checked it fits)."""
    if memcg is not None and not memcg.is_root and nr_pages:
        page_counter_charge(memcg.memory, nr_pages)


# --- uncharging -------------------------------------------------------------------------------
def uncharge_pages(owner: Any, nr_pages: int) -> None:
    """Pages of an LRU owner (an mm, a memcg's unmapped page cache) were freed."""
    memcg = memcg_of(owner)
    if memcg is not None and nr_pages:
        page_counter_uncharge(memcg.memory, nr_pages)


def uncharge_swap(mm: MM, nr_pages: int) -> None:
    """Swap entries of an mm were freed."""
    memcg = mm.memcg
    if memcg is not None and nr_pages:
        page_counter_uncharge(memcg.swap, nr_pages)


def mem_cgroup_swapout(mm: MM, nr_pages: int) -> None:
    """Anonymous pages went to swap: the swap counter takes the charge from memory."""
    memcg = mm.memcg
    if memcg is not None and nr_pages:
        page_counter_charge(memcg.swap, nr_pages)
        page_counter_uncharge(memcg.memory, nr_pages)


def mem_cgroup_get_nr_swap_pages(m: "Machine", memcg: MemCgroup | None) -> int:
    """Free swap this memcg may still use: the tightest swap.max up the tree."""
    nr = m.swap_free
    c = memcg
    while c is not None and not c.is_root:
        nr = min(nr, c.swap.max - c.swap.usage)
        c = c.parent
    return nr


def swap_room(m: "Machine", mm: MM) -> int:
    """How many of this mm's anonymous pages reclaim may still swap out."""
    return m.swap_free if mm.memcg is None else max(0, mem_cgroup_get_nr_swap_pages(m, mm.memcg))
