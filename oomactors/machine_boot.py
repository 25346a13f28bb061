"""Building a machine's memory at boot: nodes, zones, zonelists, watermarks, the free
lists, and the memory that is in use before the first task runs (slab, page cache, the
tasks' rss).  Methods of :class:`oomactors.machine.Machine` (``_build_memory`` and
``_boot_charge``), kept here to keep machine.py to its runtime part."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError
from .kernel.mmzone import (MAX_ORDER, ZONE_DMA, ZONE_DMA32, ZONE_NORMAL, Node, Zone,
                            calculate_min_free_kbytes, setup_per_zone_lowmem_reserve,
                            setup_per_zone_wmarks)
from .kernel.task import PAGE_SIZE
from .units import format_size

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config
    from .kernel.task import MM
    from .machine import Machine


def build_memory(self: "Machine", cfg: "Config") -> None:
    """The nodes, zones, zonelists, watermarks and boot-time memory of a machine (its
    ``_build_memory``)."""
    mc, k = cfg.machine, cfg.kernel
    self.nodes: list[Node] = []
    self.zones: list[Zone] = []
    node_mem = mc.node_memory
    total_present = sum(node_mem) // PAGE_SIZE
    reserved = mc.reserved // PAGE_SIZE
    for nid, mem in enumerate(node_mem):
        node = Node(nid)
        present_total = mem // PAGE_SIZE
        sizes = []
        if nid == 0:
            # node 0 holds the low zones: ZONE_DMA (the first 16 MiB; none if
            # machine.dma = 0, as with CONFIG_ZONE_DMA off), then ZONE_DMA32
            dma, dma32 = mc.dma // PAGE_SIZE, mc.dma32 // PAGE_SIZE
            if dma:
                sizes.append((ZONE_DMA, dma))
            sizes.append((ZONE_DMA32, dma32))
            sizes.append((ZONE_NORMAL, present_total - dma - dma32))
        else:
            sizes.append((ZONE_NORMAL, present_total))
        for idx, present in sizes:
            res = reserved * present // total_present
            zone = Zone(node, idx, len(self.zones), present, present - res)
            zone.merge_block = mc.fragmentation
            node.zones.append(zone)
            self.zones.append(zone)
        self.nodes.append(node)
    self.all_nodes = frozenset(range(len(self.nodes)))
    self.totalram_pages = sum(z.managed for z in self.zones)
    # every node's zonelist: own zones highest first, then the other nodes in turn
    self.zonelists: list[list[Zone]] = []
    n = len(self.nodes)
    for nid in range(n):
        order = [self.nodes[(nid + i) % n] for i in range(n)]
        self.zonelists.append([z for node in order for z in sorted(node.zones, key=lambda z: -z.idx)])
    mfk = k.min_free_kbytes
    if mfk == "auto":
        mfk = calculate_min_free_kbytes(self.totalram_pages * PAGE_SIZE // 1024)
    elif mfk // (PAGE_SIZE // 1024) >= self.totalram_pages:
        raise ConfigError(f"kernel.min_free_kbytes: {mfk} kB is more than the machine's memory "
                          f"({self.totalram_pages * (PAGE_SIZE // 1024)} kB managed)")
    self.min_free_kbytes = mfk
    setup_per_zone_wmarks(self.zones, mfk, k.watermark_scale_factor)
    setup_per_zone_lowmem_reserve(self.nodes, list(k.lowmem_reserve_ratio))
    # boot: every managed page starts free in the largest blocks
    for z in self.zones:
        big = 1 << (MAX_ORDER - 1)
        blocks, rest = divmod(z.managed, big)
        z.free_area[MAX_ORDER - 1] = blocks
        for o in range(MAX_ORDER - 1):
            if rest & (1 << o):
                z.free_area[o] += 1
        z.nr_free = z.managed
    self.slab_floor = [0] * len(self.zones)
    self.slab_deferred = [0] * len(self.zones)  # the superblock shrinker's nr_deferred, by zone
    boot_charge(self, "machine.slab_unreclaimable", "slab_unreclaimable", None, mc.slab_unreclaimable // PAGE_SIZE)
    boot_charge(self, "machine.slab_reclaimable", "slab_reclaimable", None, mc.slab_reclaimable // PAGE_SIZE)
    for z in self.zones:
        self.slab_floor[z.gid] = z.nr["slab_reclaimable"] // 4
    boot_charge(self, "machine.page_cache", "file", None, mc.page_cache // PAGE_SIZE)
    boot_charge(self, "machine.dirty", "dirty", None, mc.dirty // PAGE_SIZE)
    # fragmentation: shatter part of the free memory into single pages
    for z in self.zones:
        k_pages = int(z.nr_free * mc.fragmentation)
        if k_pages and z.take_pages_bulk(k_pages):
            z.free_area[0] += k_pages
            z.nr_free += k_pages
        z.vm_free = z.nr_free

def boot_charge(self: "Machine", where: str, kind: str, mm: "MM | None", pages: int, pt: int = 0,
                nodes: frozenset[int] | None = None) -> None:
    """Boot-time memory, taken from the highest zones first (of ``nodes``, if given:
    a task's memory stays inside its cpuset and bind/interleave policy).  Memory that
    does not fit is a config error at the key path ``where``: a machine cannot boot
    with it, so ``oomactors validate`` refuses it."""
    want_pages = pages
    room_total = sum(max(0, z.nr_free - z.high_wmark * 2) for z in self.zones
                     if nodes is None or z.node.nid in nodes)
    for z in sorted(self.zones, key=lambda z: (-z.idx, z.gid)):
        if pages + pt <= 0:
            return
        if nodes is not None and z.node.nid not in nodes:
            continue
        room = max(0, z.nr_free - z.high_wmark * 2)
        take = min(pages, room)
        ptake = min(pt, room - take)
        if take + ptake and z.take_pages_bulk(take + ptake):
            self.charge(z, kind, mm, take, ptake)
            z.vm_free = z.nr_free
            pages -= take
            pt -= ptake
    if pages > 0 or pt > 0:
        on = "" if nodes is None or nodes == self.all_nodes else f" of node(s) {self.nodelist(nodes)}"
        hint = ""
        if self.cfg.kernel.min_free_kbytes != "auto":
            hint = f"; kernel.min_free_kbytes = {self.min_free_kbytes} keeps much of it back"
        raise ConfigError(f"{where}: {format_size(want_pages * PAGE_SIZE)} does not fit in memory at boot "
                          f"({format_size(room_total * PAGE_SIZE)} free{on} above twice the "
                          f"high watermarks, after what came before it){hint}")
