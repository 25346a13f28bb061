"""Direct compaction (mm/compaction.c, 5.10).

Compaction migrates movable pages so that scattered free pages coalesce into a block of
the requested order.  The model works on the buddy counts: it can turn free pages held in
blocks below the order into blocks of the order, limited by how much of the zone is
movable (``1 - fragmentation``) and by how hard the priority lets it try.  Suitability,
the fragmentation index and deferral follow the kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import gfp as G
from . import params
from .mmzone import MAX_ORDER, PAGE_ALLOC_COSTLY_ORDER, Zone

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .page_alloc import AllocContext
    from .task import Task

# enum compact_priority
COMPACT_PRIO_SYNC_FULL = 0
MIN_COMPACT_PRIORITY = COMPACT_PRIO_SYNC_FULL
COMPACT_PRIO_SYNC_LIGHT = 1
MIN_COMPACT_COSTLY_PRIORITY = COMPACT_PRIO_SYNC_LIGHT
DEF_COMPACT_PRIORITY = COMPACT_PRIO_SYNC_LIGHT
COMPACT_PRIO_ASYNC = 2
INIT_COMPACT_PRIORITY = COMPACT_PRIO_ASYNC
PRIORITY_NAMES = ("COMPACT_PRIO_SYNC_FULL", "COMPACT_PRIO_SYNC_LIGHT", "COMPACT_PRIO_ASYNC")

# enum compact_result (ordered: later means "more progress")
COMPACT_NOT_SUITABLE_ZONE = 0
COMPACT_SKIPPED = 1
COMPACT_DEFERRED = 2
COMPACT_NO_SUITABLE_PAGE = 3
COMPACT_CONTINUE = 4
COMPACT_COMPLETE = 5
COMPACT_PARTIAL_SKIPPED = 6
COMPACT_CONTENDED = 7
COMPACT_SUCCESS = 8
RESULT_NAMES = ("not_suitable_zone", "skipped", "deferred", "no_suitable_page", "continue",
                "complete", "partial_skipped", "contended", "success")

MAX_COMPACT_RETRIES = 16
COMPACT_MAX_DEFER_SHIFT = 6
EXTFRAG_THRESHOLD = 500
# share of the zone one pass may migrate, by priority (async passes give up early)
_EFFORT = {COMPACT_PRIO_SYNC_FULL: 1.0, COMPACT_PRIO_SYNC_LIGHT: 0.5, COMPACT_PRIO_ASYNC: 0.25}


def compact_gap(order: int) -> int:
    return 2 << order


def compaction_deferred(zone: Zone, order: int) -> bool:
    defer_limit = 1 << zone.compact_defer_shift
    if order < zone.compact_order_failed:
        return False
    zone.compact_considered += 1
    if zone.compact_considered >= defer_limit:
        zone.compact_considered = defer_limit
        return False
    return True


def defer_compaction(zone: Zone, order: int) -> None:
    zone.compact_considered = 0
    zone.compact_defer_shift = min(zone.compact_defer_shift + 1, COMPACT_MAX_DEFER_SHIFT)
    if order < zone.compact_order_failed:
        zone.compact_order_failed = order


def compaction_defer_reset(zone: Zone, order: int, alloc_success: bool) -> None:
    if alloc_success:
        zone.compact_considered = 0
        zone.compact_defer_shift = 0
    if order >= zone.compact_order_failed:
        zone.compact_order_failed = order + 1


def fragmentation_index(zone: Zone, order: int) -> int:
    """-1000 when a block is free; near 0 for lack of memory, near 1000 for fragmentation."""
    requested = 1 << order
    fa = zone.free_area
    free_blocks_total = sum(fa)
    if not free_blocks_total:
        return 0
    if zone.has_block(order):
        return -1000
    free_pages = zone.nr_free
    return 1000 - (1000 + free_pages * 1000 // requested) // free_blocks_total


def __compaction_suitable(zone: Zone, order: int, highest_zoneidx: int, free_pages: int) -> int:
    from .page_alloc import ALLOC_CMA, __zone_watermark_ok
    watermark = zone.low_wmark if order > PAGE_ALLOC_COSTLY_ORDER else zone.min_wmark
    watermark += compact_gap(order)
    if not __zone_watermark_ok(zone, 0, watermark, highest_zoneidx, ALLOC_CMA, free_pages):
        return COMPACT_SKIPPED
    return COMPACT_CONTINUE


def compaction_suitable(zone: Zone, order: int, alloc_flags: int, highest_zoneidx: int) -> int:
    from .page_alloc import ALLOC_WMARK_MASK, __zone_watermark_ok
    if __zone_watermark_ok(zone, order, zone.watermark[alloc_flags & ALLOC_WMARK_MASK],
                           highest_zoneidx, alloc_flags, zone.nr_free):
        return COMPACT_SUCCESS
    ret = __compaction_suitable(zone, order, highest_zoneidx, zone.nr_free)
    if ret == COMPACT_CONTINUE and order > PAGE_ALLOC_COSTLY_ORDER:
        fragindex = fragmentation_index(zone, order)
        if 0 <= fragindex <= EXTFRAG_THRESHOLD:
            ret = COMPACT_NOT_SUITABLE_ZONE
    return ret


def compaction_zonelist_suitable(m: "Machine", ac: "AllocContext", order: int) -> bool:
    """Would compaction be worth it if reclaim freed everything it could?"""
    for zone in ac.zones():
        available = zone.zone_reclaimable_pages(m.swap_free) // order + zone.nr_free
        if __compaction_suitable(zone, order, ac.highest_zoneidx, available) != COMPACT_SKIPPED:
            return True
    return False


def compact_zone(zone: Zone, order: int, prio: int) -> tuple[int, int]:
    """Coalesce movable free space into order-``order`` blocks.  Returns (result, migrated)."""
    fa = zone.free_area
    small = sum(fa[o] << o for o in range(order))
    movable = 1.0 - zone.merge_block
    budget = int(small * movable * _EFFORT[prio])
    nblocks = budget >> order
    if nblocks <= 0:
        return COMPACT_COMPLETE, 0
    need = nblocks << order
    o = 0
    while need > 0 and o < order:
        size = 1 << o
        take = min(fa[o], -(-need // size))
        fa[o] -= take
        got = take * size
        if got > need:  # the last block overshot: its tail goes back as smaller blocks
            rest = got - need
            for k in range(o):
                if rest & (1 << k):
                    fa[k] += 1
            need = 0
        else:
            need -= got
        o += 1
    fa[order] += nblocks
    return (COMPACT_SUCCESS if zone.has_block(order) else COMPACT_COMPLETE), nblocks << order


async def try_to_compact_pages(m: "Machine", cur: "Task", gfp_mask: int, order: int, alloc_flags: int,
                               ac: "AllocContext", prio: int) -> int:
    """Compact each zone of the zonelist until one can satisfy the request."""
    if not gfp_mask & G.__GFP_IO:
        return COMPACT_SKIPPED
    m.emit("compaction:mm_compaction_try_to_compact_pages", cur.pid, order, G.format_gfp(gfp_mask),
           PRIORITY_NAMES[prio])
    rc = COMPACT_SKIPPED
    migrated = 0
    for zone in ac.zones():
        if prio > MIN_COMPACT_PRIORITY and compaction_deferred(zone, order):
            rc = max(COMPACT_DEFERRED, rc)
            continue
        status = compaction_suitable(zone, order, alloc_flags, ac.highest_zoneidx)
        if status == COMPACT_CONTINUE:
            status, moved = compact_zone(zone, order, prio)
            migrated += moved
        rc = max(status, rc)
        m.emit("compaction:mm_compaction_end", cur.pid, order, PRIORITY_NAMES[prio],
               RESULT_NAMES[status], migrated)
        if status == COMPACT_SUCCESS:
            compaction_defer_reset(zone, order, False)
            break
        if prio != COMPACT_PRIO_ASYNC and status in (COMPACT_COMPLETE, COMPACT_PARTIAL_SKIPPED):
            defer_compaction(zone, order)
        if cur.fatal_signal_pending():
            break
    await m.sched.run(cur, params.COMPACT_BASE_NS + migrated * params.MIGRATE_NS_PER_PAGE, "compact.scan")
    return rc


def compaction_made_progress(result: int) -> bool:
    return result == COMPACT_SUCCESS


def compaction_failed(result: int) -> bool:
    return result == COMPACT_COMPLETE


def compaction_needs_reclaim(result: int) -> bool:
    return result == COMPACT_SKIPPED


def compaction_withdrawn(result: int) -> bool:
    return result in (COMPACT_DEFERRED, COMPACT_CONTENDED, COMPACT_PARTIAL_SKIPPED)


assert MAX_ORDER > PAGE_ALLOC_COSTLY_ORDER
