"""The allocator's entry and slow path (the second half of mm/page_alloc.c, Linux 5.10).

``__alloc_pages_slowpath`` keeps the kernel's labels -- ``retry_cpuset``, ``retry``,
``nopage``, ``fail``, ``got_pg`` -- as states of a small loop, so its branches can be
compared with the C function line by line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import gfp as G
from . import params
from .compaction import (COMPACT_DEFERRED, COMPACT_SKIPPED, DEF_COMPACT_PRIORITY,
                         INIT_COMPACT_PRIORITY, MAX_COMPACT_RETRIES, MIN_COMPACT_COSTLY_PRIORITY,
                         MIN_COMPACT_PRIORITY, PRIORITY_NAMES, RESULT_NAMES, compaction_defer_reset,
                         compaction_failed, compaction_made_progress, compaction_needs_reclaim,
                         compaction_withdrawn, compaction_zonelist_suitable, try_to_compact_pages)
from .mmzone import MAX_ORDER, MAX_RECLAIM_RETRIES, PAGE_ALLOC_COSTLY_ORDER, ZONE_NORMAL, Zone
from .page_alloc import (ALLOC_CPUSET, ALLOC_HARDER, ALLOC_KSWAPD, ALLOC_NO_WATERMARKS, ALLOC_OOM,
                         ALLOC_WMARK_HIGH, ALLOC_WMARK_LOW, MIGRATE_MOVABLE, MIGRATE_UNMOVABLE,
                         AllocContext, __alloc_pages_cpuset_fallback, __gfp_pfmemalloc_flags,
                         __zone_watermark_ok, current_alloc_flags, drain_all_pages,
                         first_zones_zonelist, get_page_from_freelist, gfp_pfmemalloc_allowed,
                         gfp_to_alloc_flags, warn_alloc)
from .mempolicy import cpuset_nodemask_valid_mems_allowed
from .oom_kill import OomControl, out_of_memory
from .task import PF_DUMPCORE, PF_MEMALLOC
from .vmscan import try_to_free_pages
from .vmscan_kswapd import wake_all_kswapds
from ..psi import psi_memstall_enter, psi_memstall_leave

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .task import MM, Task


# gfp mask -> (gfp_zone, migratetype, __GFP_WRITE set), computed once per mask
_GFP_FACTS: dict[int, tuple[int, int, bool]] = {}
_KSWAPD_RECLAIM = G.__GFP_KSWAPD_RECLAIM


def prepare_alloc_pages(m: "Machine", cur: "Task", gfp_mask: int, order: int, preferred_nid: int,
                        nodemask: frozenset[int] | None, kind: str, mm: "MM | None",
                        pt: int) -> tuple[AllocContext, int, int]:
    ac = alloc_context(m, gfp_mask, preferred_nid, nodemask, kind, mm, pt)
    alloc_mask = gfp_mask
    alloc_flags = ALLOC_WMARK_LOW
    if m.cpusets_enabled:
        alloc_mask |= G.__GFP_HARDWALL
        if ac.nodemask is None:
            ac.nodemask = cur.mems_allowed
        else:
            alloc_flags |= ALLOC_CPUSET
    # the zonelist walk starts at the first eligible zone anyway: the slow path sets
    # ac.preferred where it needs it (no usable zone -> nopage)
    return ac, alloc_mask, alloc_flags


def alloc_context(m: "Machine", gfp_mask: int, preferred_nid: int, nodemask: frozenset[int] | None,
                  kind: str, mm: "MM | None", pt: int) -> AllocContext:
    """prepare_alloc_pages' struct alloc_context, all that a machine without cpusets needs."""
    facts = _GFP_FACTS.get(gfp_mask)
    if facts is None:
        facts = _GFP_FACTS[gfp_mask] = (G.gfp_zone(gfp_mask),
                                        MIGRATE_MOVABLE if gfp_mask & G.__GFP_MOVABLE else MIGRATE_UNMOVABLE,
                                        bool(gfp_mask & G.__GFP_WRITE))
    ac = AllocContext(m.zonelists[preferred_nid], nodemask, facts[0], facts[1], kind, mm, pt)
    ac.spread_dirty_pages = facts[2]
    return ac


def first_attempt(m: "Machine", cur: "Task", gfp_mask: int, order: int, preferred_nid: int,
                  nodemask: frozenset[int] | None, nr: int, kind: str, mm: "MM | None",
                  pt: int) -> Zone | None:
    """__alloc_pages_nodemask's first attempt (LOW watermark) on a machine without cpusets,
    where prepare_alloc_pages comes down to the alloc_context (the fast path of every run).

    The alloc_context is the machine's one for this mask and node, refilled: the attempt
    is plain calls with no await, so nothing else can use it meanwhile and nothing keeps
    it (the slow path builds its own).  A failed attempt changes nothing."""
    acs = m.fast_acs[preferred_nid]
    ac = acs.get(gfp_mask)
    if ac is None:
        ac = acs[gfp_mask] = alloc_context(m, gfp_mask, preferred_nid, None, kind, mm, pt)
    ac.nodemask = nodemask
    ac.kind = kind
    ac.mm = mm
    ac.pt = pt
    return get_page_from_freelist(m, cur, gfp_mask, order, ALLOC_WMARK_LOW | (gfp_mask & _KSWAPD_RECLAIM),
                                  ac, nr)


async def __alloc_pages_nodemask(m: "Machine", cur: "Task", gfp_mask: int, order: int,
                                 preferred_nid: int = 0, nodemask: frozenset[int] | None = None,
                                 *, nr: int = 1, kind: str = "kernel", mm: "MM | None" = None,
                                 pt: int = 0, fast_failed: bool = False) -> Zone | None:
    """One attempt at the LOW watermark; the slow path when that fails.  ``fast_failed``:
    the caller just made that attempt (:func:`first_attempt`, machines without cpusets) and
    nothing changed since, so it goes straight to the slow path."""
    if order >= MAX_ORDER:
        return None  # WARN_ON_ONCE(!(gfp_mask & __GFP_NOWARN))
    if m.cpusets_enabled:
        ac, alloc_mask, alloc_flags = prepare_alloc_pages(m, cur, gfp_mask, order, preferred_nid,
                                                          nodemask, kind, mm, pt)
    else:
        if not fast_failed:
            page = first_attempt(m, cur, gfp_mask, order, preferred_nid, nodemask, nr, kind, mm, pt)
            if page is not None:
                return page
        ac = alloc_context(m, gfp_mask, preferred_nid, nodemask, kind, mm, pt)
        ac.spread_dirty_pages = False
        fast = m.fast_acs[preferred_nid].get(gfp_mask)
        if fast is not None:  # the first attempt's context, same zonelist and highest zone
            ac.share_walk(fast)
        return await __alloc_pages_slowpath(m, cur, gfp_mask, order, ac, nr)
    alloc_flags |= gfp_mask & _KSWAPD_RECLAIM  # alloc_flags_nofragment: ALLOC_KSWAPD
    page = get_page_from_freelist(m, cur, alloc_mask, order, alloc_flags, ac, nr)
    if page is not None:
        return page
    # scoped NOFS/NOIO contexts (current_gfp_context) are not modelled
    alloc_mask = gfp_mask
    ac.spread_dirty_pages = False
    # restore the caller's nodemask: the fast path may have used current's mems_allowed;
    # the slow path enforces the cpuset through ALLOC_CPUSET in get_page_from_freelist
    ac.nodemask = nodemask
    return await __alloc_pages_slowpath(m, cur, alloc_mask, order, ac, nr)


async def __alloc_pages(m: "Machine", cur: "Task", gfp_mask: int, order: int, preferred_nid: int = 0,
                        **kw) -> Zone | None:
    return await __alloc_pages_nodemask(m, cur, gfp_mask, order, preferred_nid, None, **kw)


# --- the slow path's helpers ----------------------------------------------------------
def read_mems_allowed_begin(m: "Machine", cur: "Task") -> int:
    """The cookie: current's mems_allowed seqcount with its low bit cleared.  A reader that
    begins while an update is half done (odd count) gets a cookie the count can no longer
    equal, so it retries.  (The kernel's reader spins until the writer is done; the model
    does not spin -- raw_seqcount_begin semantics.)  0 while no cpuset exists."""
    if not m.cpusets_enabled:
        return 0
    return m.mems_allowed_seq.get(cur.pid, 0) & ~1


def read_mems_allowed_retry(m: "Machine", cur: "Task", seq: int) -> bool:
    """Did the seqcount move since the cookie was taken (or was it odd then)?"""
    if not m.cpusets_enabled:
        return False
    return m.mems_allowed_seq.get(cur.pid, 0) != seq


def check_retry_cpuset(m: "Machine", cur: "Task", cookie: int, ac: AllocContext,
                       where: str = "nopage") -> bool:
    """A cpuset update raced with us: restart rather than fail or kill too early."""
    if not m.cpusets_enabled or not m.fixes.get("cpuset_retry", True):
        return False
    # the policy nodemask and the cpuset may no longer meet (policy_nodemask checked it,
    # but an update can come in between): ignore the policy, as MPOL_BIND documents
    if ac.nodemask is not None and not cpuset_nodemask_valid_mems_allowed(cur, ac.nodemask):
        ac.nodemask = None
        reason = "nodemask"
    elif read_mems_allowed_retry(m, cur, cookie):
        reason = "seqcount"
    else:
        return False
    m.emit("sim:cpuset_retry", cur.pid, where, reason, cookie, m.mems_allowed_seq.get(cur.pid, 0))
    return True


async def __perform_reclaim(m: "Machine", cur: "Task", gfp_mask: int, order: int, ac: AllocContext) -> int:
    await m.sched.point(cur, "reclaim.begin")
    old = cur.flags & PF_MEMALLOC
    cur.flags |= PF_MEMALLOC  # memalloc_noreclaim_save: reclaim must not recurse
    cur.stall_since = m.now
    pflags = psi_memstall_enter(m, cur)  # direct reclaim is a memory stall
    try:
        progress = await try_to_free_pages(m, cur, ac, order, gfp_mask)
    finally:
        psi_memstall_leave(m, cur, pflags)
        cur.flags = (cur.flags & ~PF_MEMALLOC) | old
        cur.stall_since = None
    await m.sched.point(cur, "reclaim.begin")  # the cond_resched() after reclaim
    return progress


async def __alloc_pages_direct_reclaim(m: "Machine", cur: "Task", gfp_mask: int, order: int,
                                       alloc_flags: int, ac: AllocContext, nr: int) -> tuple[Zone | None, int]:
    progress = await __perform_reclaim(m, cur, gfp_mask, order, ac)
    if not progress:
        return None, 0
    page = get_page_from_freelist(m, cur, gfp_mask, order, alloc_flags, ac, nr)
    if page is None:
        drain_all_pages(m)  # per-CPU lists hide free pages: give them back once
        page = get_page_from_freelist(m, cur, gfp_mask, order, alloc_flags, ac, nr)
    return page, progress


async def __alloc_pages_direct_compact(m: "Machine", cur: "Task", gfp_mask: int, order: int,
                                       alloc_flags: int, ac: AllocContext, prio: int,
                                       nr: int) -> tuple[Zone | None, int]:
    if not order:
        return None, COMPACT_SKIPPED
    pflags = psi_memstall_enter(m, cur)  # so is direct compaction
    old = cur.flags & PF_MEMALLOC
    cur.flags |= PF_MEMALLOC
    try:
        result = await try_to_compact_pages(m, cur, gfp_mask, order, alloc_flags, ac, prio)
    finally:
        cur.flags = (cur.flags & ~PF_MEMALLOC) | old
        psi_memstall_leave(m, cur, pflags)
    # up to 5.0 a skipped or deferred compaction returned here; 5.10 counts a stall and
    # tries the freelist whatever the result; 2021 brought back the return for SKIPPED
    early = m.profile.compact_early_return
    if result == COMPACT_SKIPPED and early or result == COMPACT_DEFERRED and early == "inactive":
        return None, result
    m.vmstat["compact_stall"] += 1
    page = get_page_from_freelist(m, cur, gfp_mask, order, alloc_flags, ac, nr)
    if page is not None:
        compaction_defer_reset(page, order, True)
        m.vmstat["compact_success"] += 1
        return page, result
    m.vmstat["compact_fail"] += 1
    await m.sched.point(cur, "alloc.cond_resched")
    return None, result


async def should_reclaim_retry(m: "Machine", cur: "Task", gfp_mask: int, order: int, ac: AllocContext,
                               alloc_flags: int, did_some_progress: bool, state: dict,
                               nr: int = 1) -> bool:
    """The OOM detector: give up after MAX_RECLAIM_RETRIES rounds without progress, or when no
    zone could meet its min watermark even if everything reclaimable were reclaimed."""
    # costly orders may progress without their order becoming available: always count them
    if did_some_progress and order <= PAGE_ALLOC_COSTLY_ORDER:
        state["no_progress_loops"] = 0
    else:
        state["no_progress_loops"] += 1
    loops = state["no_progress_loops"]
    if loops > MAX_RECLAIM_RETRIES:
        return False  # (the high-atomic reserve is not modelled)
    ret = False
    for zone in ac.zones():
        min_wmark = zone.min_wmark
        reclaimable = zone.zone_reclaimable_pages(m.swap_free)
        available = reclaimable + zone.nr_free
        wmark = __zone_watermark_ok(zone, order, min_wmark, ac.highest_zoneidx, alloc_flags, available, nr)
        m.emit("oom:reclaim_retry_zone", cur.pid, zone.node.nid, zone.name, order, reclaimable,
               available, min_wmark, loops, int(wmark))
        if wmark:
            if not did_some_progress:
                # lots of dirty and writeback pages: wait for IO rather than go OOM
                write_pending = zone.nr["dirty"] + zone.nr["writeback"]
                if 2 * write_pending > reclaimable:
                    m.emit("sim:throttle", cur.pid, "congestion_wait", m.hz // 10)
                    await m.sched.sleep(cur, max(1, m.hz // 10), "reclaim.congestion_wait")
                    return True
            ret = True
            break
    await m.sched.point(cur, "alloc.cond_resched")
    return ret


def should_compact_retry(m: "Machine", cur: "Task", ac: AllocContext, order: int, alloc_flags: int,
                         compact_result: int, state: dict) -> bool:
    max_retries = MAX_COMPACT_RETRIES
    ret = False
    retries = state["compaction_retries"]
    priority = state["compact_priority"]
    if not order:
        return False
    if compaction_made_progress(compact_result):
        state["compaction_retries"] += 1
    check_priority = False
    if compaction_failed(compact_result):
        check_priority = True
    elif compaction_needs_reclaim(compact_result):
        ret = compaction_zonelist_suitable(m, ac, order)
    elif compaction_withdrawn(compact_result):
        check_priority = True
    else:
        if order > PAGE_ALLOC_COSTLY_ORDER:
            max_retries //= 4
        if state["compaction_retries"] <= max_retries:
            ret = True
        else:
            check_priority = True
    if check_priority:
        min_priority = MIN_COMPACT_COSTLY_PRIORITY if order > PAGE_ALLOC_COSTLY_ORDER else MIN_COMPACT_PRIORITY
        if state["compact_priority"] > min_priority:
            state["compact_priority"] -= 1
            state["compaction_retries"] = 0
            ret = True
    m.emit("oom:compact_retry", cur.pid, order, PRIORITY_NAMES[priority], RESULT_NAMES[compact_result],
           retries, max_retries, int(ret))
    return ret


async def __alloc_pages_may_oom(m: "Machine", cur: "Task", gfp_mask: int, order: int,
                                ac: AllocContext, nr: int) -> tuple[Zone | None, int]:
    """Take oom_lock with trylock; one last try at the HIGH watermark; then blame time."""
    did_some_progress = 0
    if not m.oom_lock_trylock(cur):
        # somebody else is handling OOM: that counts as progress for us
        await m.sched.sleep(cur, 1, "may_oom.trylock_failed")
        return None, 1
    try:
        await m.sched.point(cur, "may_oom.locked")
        # only to catch a parallel OOM kill: fail while we are still under heavy pressure
        page = None
        if m.fixes.get("high_wmark_last_attempt", True):
            page = get_page_from_freelist(m, cur, (gfp_mask | G.__GFP_HARDWALL) & ~G.__GFP_DIRECT_RECLAIM,
                                          order, ALLOC_WMARK_HIGH | ALLOC_CPUSET, ac, nr)
        if page is not None:
            m.branches["may_oom: high watermark page"] += 1
            return page, did_some_progress
        if cur.flags & PF_DUMPCORE:
            m.branches["may_oom: coredump"] += 1
            return None, 0            # coredumps can quickly deplete all memory reserves
        if order > PAGE_ALLOC_COSTLY_ORDER:
            m.branches["may_oom: costly order"] += 1
            return None, 0            # the OOM killer will not help higher order allocs
        if gfp_mask & (G.__GFP_RETRY_MAYFAIL | G.__GFP_THISNODE):
            m.branches["may_oom: retry_mayfail or thisnode"] += 1
            return None, 0            # the caller has a better fallback than a kill
        if ac.highest_zoneidx < ZONE_NORMAL:
            m.branches["may_oom: lowmem"] += 1
            return None, 0            # no needless kills for lowmem
        oc = OomControl(ac.zonelist, ac.nodemask, None, gfp_mask, order)
        # what this OOM is about, for invariant checkers (no_unnecessary_kill): the request
        # whose last HIGH-watermark attempt just failed (or was skipped)
        m.oom_alloc[cur.pid] = (oc, ac, nr)
        try:
            oom_progress = await out_of_memory(m, cur, oc)
        finally:
            del m.oom_alloc[cur.pid]
        if oom_progress or gfp_mask & G.__GFP_NOFAIL:
            did_some_progress = 1
            if gfp_mask & G.__GFP_NOFAIL:
                m.branches["may_oom: nofail fallback"] += 1
                page = __alloc_pages_cpuset_fallback(m, cur, gfp_mask, order, ALLOC_NO_WATERMARKS, ac, nr)
        return page, did_some_progress
    finally:
        m.oom_lock_unlock(cur)


# --- the slow path ------------------------------------------------------------------
async def __alloc_pages_slowpath(m: "Machine", cur: "Task", gfp_mask: int, order: int,
                                 ac: AllocContext, nr: int = 1) -> Zone | None:
    can_direct_reclaim = bool(gfp_mask & G.__GFP_DIRECT_RECLAIM)
    costly_order = order > PAGE_ALLOC_COSTLY_ORDER
    page: Zone | None = None
    loops = 0
    m.emit("sim:slowpath_enter", cur.pid, order, G.format_gfp(gfp_mask))
    # atomic reserves are for callers that cannot sleep
    if gfp_mask & (G.__GFP_ATOMIC | G.__GFP_DIRECT_RECLAIM) == G.__GFP_ATOMIC | G.__GFP_DIRECT_RECLAIM:
        gfp_mask &= ~G.__GFP_ATOMIC
    state = {"compaction_retries": 0, "no_progress_loops": 0, "compact_priority": DEF_COMPACT_PRIORITY}
    cpuset_mems_cookie = 0
    alloc_flags = 0
    compact_result = COMPACT_SKIPPED
    did_some_progress = 0
    label = "retry_cpuset"
    restarted = False
    while True:
        if label == "retry_cpuset":
            if restarted:
                # a restart costs time like any round: a reader must not spin in zero time
                # while a cpuset writer is still inside its seqcount section
                if not m.sched.run_nowait(cur, params.SLOWPATH_ROUND_NS):
                    await m.sched.run(cur, params.SLOWPATH_ROUND_NS, "alloc.cond_resched")
            restarted = True
            state.update(compaction_retries=0, no_progress_loops=0, compact_priority=DEF_COMPACT_PRIORITY)
            cpuset_mems_cookie = read_mems_allowed_begin(m, cur)
            # the fast path used conservative flags; now set them up precisely
            alloc_flags = gfp_to_alloc_flags(cur, gfp_mask)
            ac.preferred = first_zones_zonelist(ac)
            if ac.preferred is None:
                label = "nopage"
                continue
            if alloc_flags & ALLOC_KSWAPD:
                wake_all_kswapds(m, cur, order, gfp_mask, ac)
            page = get_page_from_freelist(m, cur, gfp_mask, order, alloc_flags, ac, nr)
            if page is not None:
                label = "got_pg"
                continue
            # costly orders: compaction first, we likely have the base pages already
            if can_direct_reclaim and (costly_order or (order > 0 and ac.migratetype != MIGRATE_MOVABLE)) \
                    and not gfp_pfmemalloc_allowed(cur, gfp_mask):
                page, compact_result = await __alloc_pages_direct_compact(
                    m, cur, gfp_mask, order, alloc_flags, ac, INIT_COMPACT_PRIORITY, nr)
                if page is not None:
                    label = "got_pg"
                    continue
                if costly_order and gfp_mask & G.__GFP_NORETRY:
                    if compact_result in (COMPACT_SKIPPED, COMPACT_DEFERRED):
                        label = "nopage"
                        continue
                    state["compact_priority"] = INIT_COMPACT_PRIORITY
            label = "retry"
        elif label == "retry":
            loops += 1
            if not m.sched.run_nowait(cur, params.SLOWPATH_ROUND_NS):
                await m.sched.run(cur, params.SLOWPATH_ROUND_NS, "alloc.cond_resched")
            # keep kswapd awake while we loop
            if alloc_flags & ALLOC_KSWAPD:
                wake_all_kswapds(m, cur, order, gfp_mask, ac)
            reserve_flags = __gfp_pfmemalloc_flags(cur, gfp_mask)
            if reserve_flags:
                alloc_flags = current_alloc_flags(gfp_mask, reserve_flags)
            # system-oriented requests may ignore memory policies
            if not alloc_flags & ALLOC_CPUSET or reserve_flags:
                ac.nodemask = None
                ac.preferred = first_zones_zonelist(ac)
            page = get_page_from_freelist(m, cur, gfp_mask, order, alloc_flags, ac, nr)
            if page is not None:
                label = "got_pg"
                continue
            if not can_direct_reclaim:
                label = "nopage"      # the caller will not reclaim: nothing to balance
                continue
            if cur.flags & PF_MEMALLOC:
                label = "nopage"      # avoid recursion of direct reclaim
                continue
            page, did_some_progress = await __alloc_pages_direct_reclaim(
                m, cur, gfp_mask, order, alloc_flags, ac, nr)
            if page is not None:
                label = "got_pg"
                continue
            page, compact_result = await __alloc_pages_direct_compact(
                m, cur, gfp_mask, order, alloc_flags, ac, state["compact_priority"], nr)
            if page is not None:
                label = "got_pg"
                continue
            if gfp_mask & G.__GFP_NORETRY:
                label = "nopage"      # do not loop if specifically requested
                continue
            if costly_order and not gfp_mask & G.__GFP_RETRY_MAYFAIL:
                label = "nopage"      # costly orders only loop with __GFP_RETRY_MAYFAIL
                continue
            if await should_reclaim_retry(m, cur, gfp_mask, order, ac, alloc_flags,
                                          did_some_progress > 0, state, nr):
                continue
            if did_some_progress > 0 and should_compact_retry(m, cur, ac, order, alloc_flags,
                                                              compact_result, state):
                continue
            # deal with possible cpuset update races before we start OOM killing
            if check_retry_cpuset(m, cur, cpuset_mems_cookie, ac, "before_oom"):
                label = "retry_cpuset"
                continue
            # reclaim has failed us, start killing things
            page, did_some_progress = await __alloc_pages_may_oom(m, cur, gfp_mask, order, ac, nr)
            if page is not None:
                label = "got_pg"
                continue
            # a victim that already used its reserves fails instead of looping
            if cur.tsk_is_oom_victim() and (alloc_flags & ALLOC_OOM or gfp_mask & G.__GFP_NOMEMALLOC):
                label = "nopage"
                continue
            # retry as long as the OOM killer is making progress
            if did_some_progress:
                state["no_progress_loops"] = 0
                continue
            label = "nopage"
        elif label == "nopage":
            if check_retry_cpuset(m, cur, cpuset_mems_cookie, ac, "nopage"):
                label = "retry_cpuset"
                continue
            if gfp_mask & G.__GFP_NOFAIL:
                if not can_direct_reclaim:
                    label = "fail"
                    continue
                # reserves, but not all of them: that would only make things worse
                page = __alloc_pages_cpuset_fallback(m, cur, gfp_mask, order, ALLOC_HARDER, ac, nr)
                if page is not None:
                    label = "got_pg"
                    continue
                await m.sched.point(cur, "alloc.nofail_retry")
                if state["no_progress_loops"] > MAX_RECLAIM_RETRIES:
                    # nothing left to reclaim, and no kill helps (a lowmem request, or one
                    # the OOM killer declines): the kernel spins here through many cheap
                    # rounds with cond_resched(); the model folds one jiffy of them into one
                    # round, so a hopeless request costs the CPU it costs without flooding
                    # the run with identical rounds
                    await m.sched.run(cur, m.sched.clock.jiffy_ns, "alloc.cond_resched")
                label = "retry"
                continue
            label = "fail"
        elif label == "fail":
            warn_alloc(m, cur, gfp_mask, order, ac.nodemask)
            m.vmstat["alloc_fail"] += 1
            m.emit("sim:slowpath_exit", cur.pid, order, "fail", loops)
            return None
        else:  # got_pg
            m.emit("sim:slowpath_exit", cur.pid, order, "ok", loops)
            return page
