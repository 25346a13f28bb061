"""The zoned buddy allocator's entry, fast path and slow path (mm/page_alloc.c, Linux 5.10).

Function names, branch order and flags follow the kernel.  A request here may ask for
``nr`` order-0 pages at once (a fault-around chunk, like alloc_pages_bulk); the watermark
test then reserves room for all of them.  The pages are charged to their owner (``ac.kind``,
``ac.mm``) at the moment they leave the free lists, so page accounting is exact at every
event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .ratelimit import ___ratelimit
from . import gfp as G
from .cpuset import __cpuset_node_allowed, cpuset_name
from .mmzone import WMARK_HIGH, WMARK_LOW, WMARK_MIN, Node, Zone
from .page_alloc_pcp import pcp_requests
from .task import PF_MEMALLOC

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .task import MM, Task

# mm/internal.h (5.10)
ALLOC_WMARK_MIN = WMARK_MIN
ALLOC_WMARK_LOW = WMARK_LOW
ALLOC_WMARK_HIGH = WMARK_HIGH
ALLOC_NO_WATERMARKS = 0x04
ALLOC_WMARK_MASK = ALLOC_NO_WATERMARKS - 1
ALLOC_OOM = 0x08
ALLOC_HARDER = 0x10
ALLOC_HIGH = 0x20
ALLOC_CPUSET = 0x40
ALLOC_CMA = 0x80
ALLOC_NOFRAGMENT = 0x100
ALLOC_KSWAPD = 0x800

MIGRATE_UNMOVABLE, MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE = 0, 1, 2


class AllocContext:
    """struct alloc_context, plus who the pages are for (so they are charged on the spot)."""

    __slots__ = ("zonelist", "nodemask", "highest_zoneidx", "migratetype", "preferred",
                 "spread_dirty_pages", "kind", "mm", "pt", "_zones", "_zones_nodemask", "_nodes", "_nodes_of")

    def __init__(self, zonelist: list[Zone], nodemask: frozenset[int] | None, highest_zoneidx: int,
                 migratetype: int, kind: str, mm: "MM | None", pt: int = 0) -> None:
        self.zonelist = zonelist
        self.nodemask = nodemask
        self.highest_zoneidx = highest_zoneidx
        self.migratetype = migratetype
        self.preferred: Zone | None = None
        self.spread_dirty_pages = False
        self.kind = kind
        self.mm = mm
        self.pt = pt      # of the nr pages, how many become page tables of ac.mm
        self._zones: tuple[Zone, ...] | None = None
        self._zones_nodemask: frozenset[int] | None = None
        self._nodes: tuple[Node, ...] = ()
        self._nodes_of: tuple[Zone, ...] | None = None

    def zones(self) -> tuple[Zone, ...]:
        """for_each_zone_zonelist_nodemask: eligible zones in zonelist order.  Every round
        of the slow path walks them several times: kept until the nodemask changes (the
        zonelist and the highest zone never do)."""
        nm = self.nodemask
        zones = self._zones
        if zones is None or self._zones_nodemask is not nm:
            hz = self.highest_zoneidx
            zones = self._zones = tuple(z for z in self.zonelist
                                        if z.idx <= hz and (nm is None or z.node.nid in nm))
            self._zones_nodemask = nm
        return zones

    def nodes(self) -> tuple[Node, ...]:
        """The nodes of :meth:`zones`, each once, in zonelist order (kept with them)."""
        zones = self.zones()
        if self._nodes_of is not zones:
            nodes: list[Node] = []
            for z in zones:
                if z.node not in nodes:
                    nodes.append(z.node)
            self._nodes = tuple(nodes)
            self._nodes_of = zones
        return self._nodes

    def share_walk(self, other: "AllocContext") -> None:
        """Walk as ``other`` does -- over the same zonelist up to the same zone -- if it has
        this nodemask: its walk, kept on it, serves this context too (the slow path's
        context and the first attempt's, kept on the machine)."""
        if other.nodemask is self.nodemask:
            zones = self._zones = other.zones()
            self._zones_nodemask = self.nodemask
            self._nodes = other.nodes()
            self._nodes_of = zones


def first_zones_zonelist(ac: AllocContext) -> Zone | None:
    hz, nm = ac.highest_zoneidx, ac.nodemask
    for z in ac.zonelist:
        if z.idx <= hz and (nm is None or z.node.nid in nm):
            return z
    return None


# --- flags -------------------------------------------------------------------------
def gfp_to_alloc_flags(cur: "Task", gfp_mask: int) -> int:
    """Flags for the slow path: MIN watermark, cpuset, __GFP_HIGH and kswapd bits copied across."""
    alloc_flags = ALLOC_WMARK_MIN | ALLOC_CPUSET
    alloc_flags |= gfp_mask & (G.__GFP_HIGH | G.__GFP_KSWAPD_RECLAIM)  # == ALLOC_HIGH, ALLOC_KSWAPD
    if gfp_mask & G.__GFP_ATOMIC:
        # atomic callers may dip further and ignore cpusets
        if not gfp_mask & G.__GFP_NOMEMALLOC:
            alloc_flags |= ALLOC_HARDER
        alloc_flags &= ~ALLOC_CPUSET
    return alloc_flags


def oom_reserves_allowed(cur: "Task") -> bool:
    return cur.tsk_is_oom_victim()


def __gfp_pfmemalloc_flags(cur: "Task", gfp_mask: int) -> int:
    """Reserve escalation: NOMEMALLOC forbids it, MEMALLOC and PF_MEMALLOC ignore
    watermarks, an OOM victim gets the partial ALLOC_OOM boost."""
    if gfp_mask & G.__GFP_NOMEMALLOC:
        return 0
    if gfp_mask & G.__GFP_MEMALLOC:
        return ALLOC_NO_WATERMARKS
    if cur.flags & PF_MEMALLOC:
        return ALLOC_NO_WATERMARKS
    if oom_reserves_allowed(cur):
        return ALLOC_OOM
    return 0


def gfp_pfmemalloc_allowed(cur: "Task", gfp_mask: int) -> bool:
    return bool(__gfp_pfmemalloc_flags(cur, gfp_mask))


def current_alloc_flags(gfp_mask: int, alloc_flags: int) -> int:
    return alloc_flags  # no CMA in the model


# --- watermarks --------------------------------------------------------------------
def __zone_watermark_ok(z: Zone, order: int, mark: int, highest_zoneidx: int, alloc_flags: int,
                        free_pages: int, nr: int = 1) -> bool:
    """Free pages above mark + lowmem_reserve after the request, and a block of the order."""
    free_pages -= (nr << order) - 1
    min_ = mark
    if alloc_flags & ALLOC_HIGH:
        min_ -= min_ // 2
    if alloc_flags & (ALLOC_HARDER | ALLOC_OOM):
        # OOM victims may use half of what is left, atomic requests a quarter
        if alloc_flags & ALLOC_OOM:
            min_ -= min_ // 2
        else:
            min_ -= min_ // 4
    if free_pages <= min_ + z.lowmem_reserve[highest_zoneidx]:
        return False
    if not order:
        return True
    return z.has_block(order)


def zone_watermark_fast(z: Zone, order: int, mark: int, highest_zoneidx: int, alloc_flags: int,
                        nr: int) -> bool:
    """The fast check reads the folded counter, which lags the per-CPU drift."""
    free_pages = z.vm_free
    if not order and free_pages - (nr - 1) > mark + z.lowmem_reserve[highest_zoneidx]:
        return True
    return __zone_watermark_ok(z, order, mark, highest_zoneidx, alloc_flags, free_pages, nr)


# --- taking pages off the free lists ---------------------------------------------------
def rmqueue(m: "Machine", cur: "Task", zone: Zone, order: int, nr: int, ac: AllocContext) -> bool:
    """Order-0 pages come from this CPU's per-CPU list, refilled in batches; larger orders
    straight from the buddy lists.  ``ac.pt`` page-table pages come along with the request."""
    cpu = cur.cpu
    pt = ac.pt
    if order == 0 and cpu is not None:
        total = nr + pt
        g = zone.gid
        have = cpu.pcp[g]
        if have < total:
            want = total - have + m.pcp_batch
            if not zone.take_pages_bulk(want):
                want = total - have
                if not zone.take_pages_bulk(want):
                    return False
            m.mod_free(zone, cpu, -want)
            cpu.pcp[g] = have + want
        cpu.pcp[g] -= total
    else:
        if zone.nr_free < (nr << order) + pt:
            return False
        for i in range(nr):
            if not zone.rmqueue_block(order):
                for _ in range(i):
                    zone.free_block(order)
                return False
        if pt and not zone.take_pages_bulk(pt):
            for _ in range(nr):
                zone.free_block(order)
            return False
        m.mod_free(zone, cpu, -((nr << order) + pt))
    m.charge(zone, ac.kind, ac.mm, nr << order, pt)
    return True


def get_page_from_freelist(m: "Machine", cur: "Task", gfp_mask: int, order: int, alloc_flags: int,
                           ac: AllocContext, nr: int = 1) -> Zone | None:
    """Walk the zonelist for a zone that passes the watermark and has the pages."""
    mark_idx = alloc_flags & ALLOC_WMARK_MASK
    hz = ac.highest_zoneidx
    nm = ac.nodemask
    cpuset = m.cpusets_enabled and alloc_flags & ALLOC_CPUSET
    for z in ac.zonelist:
        if z.idx > hz or (nm is not None and z.node.nid not in nm):
            continue
        if cpuset and not __cpuset_zone_allowed(cur, z, gfp_mask):
            continue
        mark = z.watermark[mark_idx]
        # zone_watermark_fast's order-0 shortcut inline (the hottest check of a run)
        if (order or z.vm_free - (nr - 1) <= mark + z.lowmem_reserve[hz]) \
                and not zone_watermark_fast(z, order, mark, hz, alloc_flags, nr):
            if not alloc_flags & ALLOC_NO_WATERMARKS:
                continue
        if rmqueue(m, cur, z, order, nr, ac):
            return z
    return None


def rmqueue_pcp_run(m: "Machine", cur: "Task", zonelist: list[Zone], highest_zoneidx: int, nr: int,
                    limit: int, kind: str, mm: "MM | None", pt: bool) -> int:
    """Up to ``limit`` order-0 first attempts of ``nr`` pages each (no nodemask, no cpuset),
    one after the other with nothing in between: each served as
    :func:`get_page_from_freelist` at the LOW watermark and :func:`rmqueue` would serve
    it -- the zones that fail the watermark skipped, the same test against the folded
    counter, the same per-CPU refills from the buddy lists, the same folds of this CPU's
    drift -- computed on plain numbers (:func:`~.page_alloc_pcp.pcp_requests`) and
    applied once at the end.  Only the zone that
    serves them changes meanwhile, so the zones before it fail every time.  It stops
    before the first request that would go another way (that zone's watermark test fails,
    or its buddy lists cannot refill the per-CPU list): the caller serves that one the
    ordinary way; when no zone passes the watermark test, that request fails its first
    attempt (order 0 at the LOW watermark with no ALLOC_HIGH/HARDER/OOM: zone_watermark_fast
    has nothing more to try), and -1 says so.  ``pt``: each request also takes the
    page-table pages of ``mm`` it needs (one per 512 mapped pages, as a fault does).
    Returns the requests served.

    The buddy lists give the pages of the whole run in one take: taking ``a`` then ``b``
    pages leaves the same free lists as taking ``a + b`` (both take the lowest blocks
    first and give back a split block's tail as its binary decomposition;
    tests/test_buddy.py checks it)."""
    for zone in zonelist:
        if zone.idx <= highest_zoneidx:
            floor = zone.watermark[WMARK_LOW] + zone.lowmem_reserve[highest_zoneidx] + nr - 1
            if zone.vm_free > floor:
                break
    else:
        return -1
    cpu = cur.cpu
    g = zone.gid
    nr_free0 = zone.nr_free
    if pt:
        mapped, pgtables = mm.mapped_pages(), sum(mm.pgtables)
    else:
        mapped, pgtables = None, 0
    # the requests on plain numbers (kernel/page_alloc_pcp.py)
    done, have, diff, vm_free, nr_free, pgtables1 = pcp_requests(
        nr, limit, cpu.pcp[g], cpu.vm_diff[g], zone.vm_free, nr_free0, floor, m.pcp_batch, m.percpu_drift,
        mapped, pgtables)
    if not done:
        return 0
    if nr_free != nr_free0 and not zone.take_pages_bulk(nr_free0 - nr_free):
        raise AssertionError("buddy lists disagree with nr_free")
    cpu.pcp[g] = have
    cpu.vm_diff[g] = diff
    zone.vm_free = vm_free
    # the charges add up; the LRU move to the tail is the same done once or many times
    m.charge(zone, kind, mm, done * nr, pgtables1 - pgtables)
    return done


def __cpuset_zone_allowed(cur: "Task", z: Zone, gfp_mask: int) -> bool:
    """The zone's node passes __cpuset_node_allowed (kernel/cpuset.py): current's mems,
    or -- for victims, exiting tasks and requests without __GFP_HARDWALL -- wider."""
    return __cpuset_node_allowed(cur, z.node.nid, gfp_mask)


# --- freeing -----------------------------------------------------------------------
def free_pages(m: "Machine", cpu, zone: Zone, n: int) -> None:
    """free_unref_page: order-0 pages go to this CPU's list; each time the list reaches its
    high mark, a batch goes back to the buddy lists."""
    if cpu is None:
        zone.free_pages_bulk(n)
        m.mod_free(zone, None, n)
        return
    g = zone.gid
    cpu.pcp[g] += n
    count = cpu.pcp[g]
    if count >= m.pcp_high:
        # one batch per page that found the list at (or past) its high mark
        back = min(count, ((count - m.pcp_high) // m.pcp_batch + 1) * m.pcp_batch)
        cpu.pcp[g] -= back
        zone.free_pages_bulk(back)
        m.mod_free(zone, cpu, back)


def drain_all_pages(m: "Machine") -> int:
    """drain_all_pages: give every CPU's per-CPU pages back to the buddy lists."""
    drained = 0
    for cpu in m.sched.cpus:
        for zone in m.zones:
            n = cpu.pcp[zone.gid]
            if n:
                cpu.pcp[zone.gid] = 0
                zone.free_pages_bulk(n)
                m.mod_free(zone, cpu, n)
                drained += n
    return drained


def __alloc_pages_cpuset_fallback(m: "Machine", cur: "Task", gfp_mask: int, order: int,
                                  alloc_flags: int, ac: AllocContext, nr: int) -> Zone | None:
    """Try inside the cpuset first, then anywhere."""
    page = get_page_from_freelist(m, cur, gfp_mask, order, alloc_flags | ALLOC_CPUSET, ac, nr)
    if page is None:
        page = get_page_from_freelist(m, cur, gfp_mask, order, alloc_flags, ac, nr)
    return page


def warn_alloc(m: "Machine", cur: "Task", gfp_mask: int, order: int, nodemask: "frozenset[int] | None" = None) -> None:
    """"page allocation failure", rate-limited to one report per 10 s (nopage_rs), muted
    by __GFP_NOWARN."""
    if gfp_mask & G.__GFP_NOWARN:
        return
    if not ___ratelimit(m, m.nopage_rs, "warn_alloc", cur.pid):
        m.vmstat["warn_alloc_suppressed"] += 1
        return
    # "nodemask=%*pbl", then cpuset_print_current_mems_allowed()
    mems = cur.mems_allowed if cur.mems_allowed is not None else m.all_nodes
    m.emit("sim:page_alloc_failure", cur.pid, cur.comm, order, G.format_gfp(gfp_mask),
           m.nodelist(nodemask) if nodemask is not None else "(null)", cpuset_name(cur), m.nodelist(mems))

