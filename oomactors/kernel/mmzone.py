"""Nodes, zones, watermarks and the buddy free lists (include/linux/mmzone.h, mm/page_alloc.c).

A zone keeps its free memory by buddy order, so an order-4 request can fail while
thousands of order-0 pages are free.  The buddy lists are counts of free blocks per
order (no page addresses): allocation takes the smallest order that fits and splits it;
a freed block merges upwards while a free block of its order exists to act as its buddy
and the zone's fragmentation does not pin it (see README, "What is simplified").

Every page of a zone is in exactly one place at every moment: a buddy free list, some
CPU's per-CPU list, or one of the owner counters below.  ``check_zone`` verifies that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .lru import ZoneLru

if TYPE_CHECKING:  # pragma: no cover
    from .task import MM

ZONE_DMA, ZONE_DMA32, ZONE_NORMAL, ZONE_MOVABLE = 0, 1, 2, 3
ZONE_NAMES = ("DMA", "DMA32", "Normal", "Movable")
MAX_NR_ZONES = 4
MAX_ORDER = 11  # orders 0..10 (5.10: MAX_ORDER is exclusive)
PAGE_ALLOC_COSTLY_ORDER = 3
WMARK_MIN, WMARK_LOW, WMARK_HIGH = 0, 1, 2
MAX_RECLAIM_RETRIES = 16
SWAP_CLUSTER_MAX = 32
DEF_PRIORITY = 12

# Owner counters of a zone, in the order the page-accounting check lists them.
OWNERS = ("anon", "shmem", "file", "dirty", "writeback", "slab_reclaimable",
          "slab_unreclaimable", "pagetables", "kernel")


class Zone:
    """One zone of one node: its free lists, its watermarks and who holds its pages."""

    def __init__(self, node: "Node", idx: int, gid: int, present: int, managed: int) -> None:
        self.node = node
        self.idx = idx          # zone type (ZONE_DMA32, ZONE_NORMAL)
        self.gid = gid          # index among all zones of the machine (per-CPU arrays use it)
        self.name = ZONE_NAMES[idx]
        self.present = present
        self.managed = managed
        self.free_area = [0] * MAX_ORDER  # free blocks per order
        self.nr_free = 0                   # exact NR_FREE_PAGES (buddy only)
        self.vm_free = 0                   # the folded counter that fast checks read
        self.watermark = [0, 0, 0]
        self.lowmem_reserve = [0] * MAX_NR_ZONES
        # owners
        self.nr = dict.fromkeys(OWNERS, 0)
        self.anon_lru: dict[MM, None] = {}         # mms with anon pages here, oldest first
        self.shmem_lru: dict[MM, None] = {}        # mms with shmem pages here (kernel/shmem.py)
        self.file_lru: dict[MM | None, None] = {}  # None = unmapped page cache
        self.file_owner: dict[MM | None, int] = {}  # clean page-cache pages by mapper
        self.lru = ZoneLru()  # active/inactive aging of those pages (kernel/lru.py)
        # fragmentation: the share of merges that an unmovable neighbour blocks
        self.merge_block = 0.0
        self._merge_acc = 0.0
        # compaction deferral (mm/compaction.c)
        self.compact_considered = 0
        self.compact_defer_shift = 0
        self.compact_order_failed = MAX_ORDER

    def __repr__(self) -> str:
        return f"<Zone node{self.node.nid} {self.name}>"

    @property
    def min_wmark(self) -> int:
        return self.watermark[WMARK_MIN]

    @property
    def low_wmark(self) -> int:
        return self.watermark[WMARK_LOW]

    @property
    def high_wmark(self) -> int:
        return self.watermark[WMARK_HIGH]

    # --- buddy -------------------------------------------------------------------
    def has_block(self, order: int) -> bool:
        fa = self.free_area
        for o in range(order, MAX_ORDER):
            if fa[o]:
                return True
        return False

    def rmqueue_block(self, order: int) -> bool:
        """__rmqueue_smallest: take one block of ``order``, splitting a larger one (expand)."""
        fa = self.free_area
        for o in range(order, MAX_ORDER):
            if fa[o]:
                fa[o] -= 1
                while o > order:
                    o -= 1
                    fa[o] += 1
                self.nr_free -= 1 << order
                return True
        return False

    def free_block(self, order: int) -> None:
        """__free_one_page: return a block and merge it with free buddies."""
        fa = self.free_area
        self.nr_free += 1 << order
        while order < MAX_ORDER - 1 and fa[order]:
            self._merge_acc += 1.0 - self.merge_block
            if self._merge_acc < 1.0:
                break
            self._merge_acc -= 1.0
            fa[order] -= 1
            order += 1
        fa[order] += 1

    def free_pages_bulk(self, n: int) -> None:
        """Return ``n`` order-0 pages to the buddy lists, merging as free_block() would.

        Blocks arriving at an order pair off with the free blocks already there, then with
        each other; the merged ones carry to the next order.  A share ``merge_block`` of
        those merges is blocked (rounded by the same accumulator free_block() uses).
        """
        fa = self.free_area
        self.nr_free += n
        arriving = n
        keep = 1.0 - self.merge_block
        for o in range(MAX_ORDER - 1):
            if not arriving:
                return
            have = fa[o]
            possible = arriving if arriving <= have else have + (arriving - have) // 2
            if keep < 1.0:
                self._merge_acc += possible * keep
                merges = min(possible, int(self._merge_acc))
                self._merge_acc -= merges
            else:
                merges = possible
            fa[o] = have + arriving - 2 * merges
            arriving = merges
        fa[MAX_ORDER - 1] += arriving

    def take_pages_bulk(self, n: int) -> bool:
        """rmqueue_bulk: take ``n`` order-0 pages, splitting larger blocks as needed.

        Whole blocks go from the lowest orders up; the last block taken is split and its
        unused tail goes back as its binary decomposition.  Counted per order, not per
        block, so taking a terabyte costs what taking a page does."""
        if self.nr_free < n:
            return False
        fa = self.free_area
        self.nr_free -= n
        if not n:
            return True
        o = 0
        for have in fa:
            if have:
                if have << o <= n:  # every block of this order goes
                    fa[o] = 0
                    n -= have << o
                    if not n:
                        return True
                else:
                    whole = n >> o
                    n -= whole << o
                    if n:  # a partial block: split it, give back the tail, one block per set bit
                        fa[o] = have - whole - 1
                        rest = (1 << o) - n
                        while rest:
                            low = rest & -rest
                            fa[low.bit_length() - 1] += 1
                            rest ^= low
                    else:
                        fa[o] = have - whole
                    return True
            o += 1
        raise AssertionError("buddy lists disagree with nr_free")  # not while nr_free >= n

    def zone_reclaimable_pages(self, swap_free: int) -> int:
        """mm/vmscan.c zone_reclaimable_pages: file LRU, plus anon LRU while swap has room."""
        nr = self.nr
        pages = nr["file"] + nr["dirty"] + nr["writeback"]
        if swap_free > 0:
            pages += nr["anon"] + nr["shmem"]  # shmem is swap-backed, on the anon LRU
        return pages


class Node:
    """A NUMA node (pglist_data): its zones and its kswapd's request state."""

    def __init__(self, nid: int) -> None:
        self.nid = nid
        self.zones: list[Zone] = []
        self.kswapd_order = 0
        self.kswapd_highest_zoneidx = MAX_NR_ZONES  # MAX_NR_ZONES = "no request"
        self.kswapd_failures = 0
        self.kernel_stack_kb = 0  # NR_KERNEL_STACK_KB: forked tasks' stacks (kernel/fork.py)
        self.kswapd_sleeping = False
        self.kswapd_task = None
        self.pfmemalloc_wait: list = []  # direct reclaimers throttled (vmscan_throttle.py)

    def zone(self, idx: int) -> Zone | None:
        for z in self.zones:
            if z.idx == idx:
                return z
        return None


def int_sqrt(x: int) -> int:
    """lib/math/int_sqrt.c: the integer square root, rounded down."""
    if x <= 0:
        return 0
    r = int(x ** 0.5)
    while r * r > x:
        r -= 1
    while (r + 1) * (r + 1) <= x:
        r += 1
    return r


def calculate_min_free_kbytes(lowmem_kbytes: int) -> int:
    """init_per_zone_wmark_min: 4 * sqrt(lowmem_kbytes), clamped to [128, 262144]."""
    return max(128, min(262144, int_sqrt(lowmem_kbytes * 16)))


def setup_per_zone_wmarks(zones: list[Zone], min_free_kbytes: int, watermark_scale_factor: int) -> None:
    """__setup_per_zone_wmarks: share pages_min by managed size; gap from the scale factor."""
    pages_min = min_free_kbytes >> 2
    lowmem_pages = sum(z.managed for z in zones)
    for z in zones:
        tmp = pages_min * z.managed // lowmem_pages
        gap = max(tmp >> 2, z.managed * watermark_scale_factor // 10000)
        z.watermark = [tmp, tmp + gap, tmp + 2 * gap]


def setup_per_zone_lowmem_reserve(nodes: list[Node], ratio: list[int]) -> None:
    """setup_per_zone_lowmem_reserve: a lower zone keeps back pages from higher-zone requests."""
    for node in nodes:
        zones = sorted(node.zones, key=lambda z: z.idx)
        for i, lower in enumerate(zones):
            lower.lowmem_reserve = [0] * MAX_NR_ZONES
            r = ratio[lower.idx] if lower.idx < len(ratio) else 0
            managed = 0
            for upper in zones[i + 1:]:
                managed += upper.managed
                if r:
                    for j in range(upper.idx, MAX_NR_ZONES):
                        lower.lowmem_reserve[j] = managed // r


def totalreserve_pages(m: Any) -> int:
    """calculate_totalreserve_pages: per zone, its largest lowmem reserve plus its high
    watermark, at most its managed pages."""
    total = 0
    for z in m.zones:
        reserve = max(z.lowmem_reserve[z.idx:]) + z.high_wmark
        total += min(reserve, z.managed)
    return total
