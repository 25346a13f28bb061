"""Memory cgroups with cgroup v2 semantics (mm/memcontrol.c, include/linux/memcontrol.h, 5.10).

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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import gfp as G
from .mmzone import MAX_RECLAIM_RETRIES, PAGE_ALLOC_COSTLY_ORDER, SWAP_CLUSTER_MAX
from .page_counter import (PAGE_COUNTER_MAX, PageCounter, page_counter_charge, page_counter_try_charge,
                           page_counter_uncharge)
from .task import MM, PAGE_SIZE, PF_EXITING, PF_MEMALLOC
from ..psi import psi_memstall_enter, psi_memstall_leave

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .mmzone import Zone
    from .task import Task

MEMCG_CHARGE_BATCH = 32
MEMCG_DELAY_PRECISION_SHIFT = 20
MEMCG_DELAY_SCALING_SHIFT = 14
ENOMEM = 12

# memory.events, in the order the file prints them.  oom_group_kill is 5.17's counter
# (MEMCG_OOM_GROUP_KILL); 5.10 has no such line, the model counts it anyway.
MEMCG_EVENTS = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill")

# enum oom_status
OOM_SUCCESS, OOM_FAILED, OOM_ASYNC, OOM_SKIPPED = range(4)


class MemCgroup:
    """struct mem_cgroup, cgroup v2: the memory and swap counters, oom.group, memory.events."""

    def __init__(self, path: str, parent: "MemCgroup | None", nzones: int, total_swap_pages: int, *,
                 max_: int = PAGE_COUNTER_MAX, high: int = PAGE_COUNTER_MAX, swap_max: int = PAGE_COUNTER_MAX,
                 min_: int = 0, low: int = 0, oom_group: bool = False) -> None:
        self.path = path
        self.parent = parent
        self.children: list[MemCgroup] = []
        self.memory = PageCounter(self, parent.memory if parent else None, max_, high, min_, low)
        self.swap = PageCounter(self, parent.swap if parent else None, swap_max)
        self.oom_group = oom_group
        self.total_swap_pages = total_swap_pages
        # unmapped page cache charged here, by zone: this memcg is its owner on the file LRU
        self.file = [0] * nzones
        self.kmem = 0            # __GFP_ACCOUNT kernel pages (never freed by the model)
        self.events = dict.fromkeys(MEMCG_EVENTS, 0)        # memory.events (hierarchical)
        # memory.stat pgscan / pgsteal (hierarchical): pages reclaim scanned / took here
        self.pgscan = 0
        self.pgsteal = 0
        self.events_local = dict.fromkeys(MEMCG_EVENTS, 0)  # memory.events.local
        if parent is not None:
            parent.children.append(self)

    def __repr__(self) -> str:
        return f"<MemCgroup {self.path}>"

    @property
    def is_root(self) -> bool:
        return self.parent is None

    def max_pages(self) -> int:
        """mem_cgroup_get_max: memory.max plus the swap it may use (swappiness is not 0)."""
        return self.memory.max + min(self.swap.max, self.total_swap_pages)


def _pages(size: int | str) -> int:
    return PAGE_COUNTER_MAX if size == "max" else size // PAGE_SIZE


def build_memcgs(cfg: Any, nzones: int, total_swap_pages: int) -> tuple[MemCgroup, dict[str, MemCgroup]]:
    """The root memcg and every configured one, by path (parents come first in the config)."""
    root = MemCgroup("/", None, nzones, total_swap_pages)
    by_path = {"/": root}
    for c in getattr(cfg, "memcgs", ()):
        parent_path = c.path.rsplit("/", 1)[0] or "/"
        by_path[c.path] = MemCgroup(c.path, by_path[parent_path], nzones, total_swap_pages,
                                    max_=_pages(c.max), high=_pages(c.high), swap_max=_pages(c.swap_max),
                                    min_=_pages(c.min), low=_pages(c.low), oom_group=c.oom_group)
    return root, by_path


# --- the tree ----------------------------------------------------------------------------
def parent_mem_cgroup(memcg: MemCgroup) -> MemCgroup | None:
    return memcg.parent


def mem_cgroup_is_descendant(memcg: MemCgroup, root: MemCgroup) -> bool:
    c: MemCgroup | None = memcg
    while c is not None:
        if c is root:
            return True
        c = c.parent
    return False


def for_each_mem_cgroup_tree(root: MemCgroup) -> list[MemCgroup]:
    """mem_cgroup_iter: a pre-order walk, the root of the walk first."""
    out = [root]
    i = 0
    while i < len(out):
        c = out[i]
        i += 1
        # depth first: insert the children right after their parent
        out[i:i] = c.children
    return out


def memcg_of(owner: Any) -> MemCgroup | None:
    """The memcg an LRU owner's pages are charged to: an mm's memcg, a memcg itself, or none
    (unmapped page cache of the root)."""
    if owner is None:
        return None
    if isinstance(owner, MM):
        return owner.memcg
    return owner


def get_mem_cgroup_from_mm(cur: "Task") -> MemCgroup | None:
    mm = cur.mm
    return mm.memcg if mm is not None else cur.memcg


def mem_cgroup_scan_tasks(m: "Machine", memcg: MemCgroup) -> list["Task"]:
    """The processes of a memcg subtree: memcg by memcg in pre-order, then in the order they
    joined (css_task_iter with CSS_TASK_ITER_PROCS)."""
    procs = m.processes()
    out = []
    for c in for_each_mem_cgroup_tree(memcg):
        out.extend(p for p in procs if p.memcg is c)
    return out


def memcg_count_scan(memcg: MemCgroup | None, scanned: int, stolen: int) -> None:
    """memory.stat's pgscan and pgsteal of ``memcg`` and every ancestor below the root."""
    c = memcg
    while c is not None and not c.is_root:
        c.pgscan += scanned
        c.pgsteal += stolen
        c = c.parent


# --- memory.events ---------------------------------------------------------------------------
def memcg_memory_event(m: "Machine", memcg: MemCgroup | None, event: str, pid: int = -1) -> None:
    """Count the event locally, then on the memcg and every ancestor below the root
    (v2 memory.events is hierarchical unless mounted with memory_localevents)."""
    if memcg is None or memcg.is_root:
        return
    memcg.events_local[event] += 1
    c: MemCgroup | None = memcg
    local = 1
    while c is not None and not c.is_root:
        c.events[event] += 1
        m.emit("sim:memcg_event", pid, c.path, event, local, c.memory.usage)
        local = 0
        c = c.parent


def memcg_memory_event_mm(m: "Machine", mm: MM, event: str, pid: int = -1) -> None:
    """Charged to the memcg of the mm's owner."""
    memcg_memory_event(m, mm.memcg, event, pid)


def emit_memcg_usage(m: "Machine") -> None:
    """A sample of every configured memcg's counters (sim:memcg_usage)."""
    for memcg in m.memcgs.values():
        if memcg.is_root:
            continue
        mem, swap = memcg.memory, memcg.swap
        m.emit_on("sim:memcg_usage", -1, -1, memcg.path, mem.usage, mem.max, mem.high, swap.usage, swap.max,
                  mem.watermark)


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


# --- memory.high --------------------------------------------------------------------------------
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


# --- the OOM killer's view --------------------------------------------------------------------------
def mem_cgroup_get_oom_group(m: "Machine", victim: "Task", oom_domain: MemCgroup | None) -> MemCgroup | None:
    """The highest memcg with memory.oom.group set between the victim's and the OOM domain."""
    root = m.root_mem_cgroup
    if oom_domain is None:
        oom_domain = root
    memcg = victim.memcg if victim.memcg is not None else root
    if memcg is root:
        return None
    # the victim moved away meanwhile: better not to kill outside the OOM domain
    if not mem_cgroup_is_descendant(memcg, oom_domain):
        return None
    oom_group = None
    c: MemCgroup | None = memcg
    while c is not None:
        if c.oom_group:
            oom_group = c
        if c is oom_domain:
            break
        c = c.parent
    return oom_group


def mem_cgroup_print_oom_meminfo(m: "Machine", memcg: MemCgroup, cur: "Task") -> None:
    mem, swap = memcg.memory, memcg.swap
    m.emit("sim:memcg_oom_meminfo", cur.pid, memcg.path, mem.usage * 4, mem.max * 4, mem.failcnt,
           swap.usage * 4, swap.max * 4, swap.failcnt)


def task_memcg_path(p: "Task") -> str:
    return p.memcg.path if p.memcg is not None else "/"
