"""The memory state an OOM report prints, read from the model at the moment of the dump.

* :func:`show_mem` -- lib/show_mem.c ``show_mem`` with mm/page_alloc.c ``show_free_areas``
  and mm/swap_state.c ``show_swap_cache_info``: the "Mem-Info:" block of a global OOM;
* :func:`memory_stat` -- mm/memcontrol.c ``memory_stat_format``: the "Memory cgroup stats"
  block of a memcg OOM.

Both record numbers only (one event each); the console renderer (oomactors/report.py and
oomactors/console_mem.py) lays them out in the profile's era.  What the model does not keep
is left out of the event rather than given a made-up value (docs/simplified.md lists it);
what the model has none of (isolated pages, mlock, bounce buffers, CMA, THP, a swap cache)
is recorded as the 0 it truly is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .lru import ANON, FILE, owner_pages
from .memcontrol import for_each_mem_cgroup_tree
from .mmzone import MAX_RECLAIM_RETRIES

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .memcontrol import MemCgroup
    from .task import Task


def _active(z: Any, kind: str, owner: Any) -> int:
    """An owner's active pages, clamped to what it holds -- read without the clamping
    write-back that lru.state does (a report must not change the model)."""
    return min(z.lru.active[kind].get(owner, 0), owner_pages(z, kind, owner))


def _zone_lru(z: Any) -> tuple[int, int, int, int]:
    """(active anon, inactive anon, active file, inactive file) of a zone.  shmem sits on
    the anon LRU and pages under writeback on the file LRU; the model ages neither, so
    they count as inactive; dirty page cache is inactive file (as lru_sizes has it)."""
    aa = sum(_active(z, ANON, o) for o in z.lru.active[ANON])
    af = sum(_active(z, FILE, o) for o in z.lru.active[FILE])
    nr = z.nr
    return aa, nr["anon"] - aa + nr["shmem"], af, nr["file"] + nr["dirty"] - af + nr["writeback"]


def _mapped(z: Any) -> int:
    """NR_FILE_MAPPED of a zone: page cache mapped by some mm, and shmem (always mapped by
    the mm that created it in the model)."""
    return sum(n for owner, n in z.file_owner.items() if owner is not None) + z.nr["shmem"]


def show_mem(m: "Machine", nodemask: frozenset[int] | None, cur: "Task") -> None:
    """show_mem(SHOW_MEM_FILTER_NODES, oc->nodemask): nodes outside the nodemask (or, with
    none, outside current's mems_allowed) are left out of the per-node, per-zone and buddy
    lines and of the first free_pcp sum; the global counters and totals cover every node."""
    allowed = nodemask if nodemask is not None else (
        cur.mems_allowed if cur.mems_allowed is not None else m.all_nodes)
    cpus = m.sched.cpus
    local = cur.cpu if cur.cpu is not None else None
    zones = [z for z in m.zones if z.present]  # for_each_populated_zone
    shown = [z for z in zones if z.node.nid in allowed]
    free_pcp = sum(c.pcp[z.gid] for z in shown for c in cpus)
    tot = {k: 0 for k in ("aa", "ia", "af", "if", "dirty", "writeback", "slab_r", "slab_u",
                          "mapped", "shmem", "pagetables", "free")}
    for z in zones:
        aa, ia, af, i_f = _zone_lru(z)
        nr = z.nr
        for k, v in (("aa", aa), ("ia", ia), ("af", af), ("if", i_f), ("dirty", nr["dirty"]),
                     ("writeback", nr["writeback"]), ("slab_r", nr["slab_reclaimable"]),
                     ("slab_u", nr["slab_unreclaimable"]), ("mapped", _mapped(z)),
                     ("shmem", nr["shmem"]), ("pagetables", nr["pagetables"]), ("free", z.vm_free)):
            tot[k] += v
    # active_anon inactive_anon isolated_anon active_file inactive_file isolated_file
    # unevictable dirty writeback slab_reclaimable slab_unreclaimable mapped shmem
    # pagetables bounce free free_pcp free_cma (pages)
    vm = [tot["aa"], tot["ia"], 0, tot["af"], tot["if"], 0, 0, tot["dirty"], tot["writeback"],
          tot["slab_r"], tot["slab_u"], tot["mapped"], tot["shmem"], tot["pagetables"], 0,
          tot["free"], free_pcp, 0]
    nodes = []
    for node in m.nodes:
        if node.nid not in allowed:
            continue
        n = [0] * 8
        for z in node.zones:
            aa, ia, af, i_f = _zone_lru(z)
            for i, v in enumerate((aa, ia, af, i_f, _mapped(z), z.nr["dirty"], z.nr["writeback"],
                                   z.nr["shmem"])):
                n[i] += v
        pagetables = sum(z.nr["pagetables"] for z in node.zones)
        # nid, active_anon inactive_anon active_file inactive_file mapped dirty writeback
        # shmem (pages), kernel_stack (kB), pagetables (pages), all_unreclaimable
        nodes.append([node.nid, *n, node.kernel_stack_kb, pagetables,
                      int(node.kswapd_failures >= MAX_RECLAIM_RETRIES)])
    zrows = []
    for z in shown:
        aa, ia, af, i_f = _zone_lru(z)
        # nid name free min low high active_anon inactive_anon active_file inactive_file
        # writepending present managed pagetables free_pcp local_pcp lowmem_reserve free_area
        zrows.append([z.node.nid, z.name, z.vm_free, z.min_wmark, z.low_wmark, z.high_wmark,
                      aa, ia, af, i_f, z.nr["dirty"] + z.nr["writeback"], z.present, z.managed,
                      z.nr["pagetables"], sum(c.pcp[z.gid] for c in cpus),
                      local.pcp[z.gid] if local is not None else 0,
                      list(z.lowmem_reserve), list(z.free_area)])
    pagecache = sum(z.nr["file"] + z.nr["dirty"] + z.nr["writeback"] + z.nr["shmem"] for z in zones)
    present = sum(z.present for z in zones)
    managed = sum(z.managed for z in zones)
    # total pagecache pages, pages in swap cache, free swap, total swap, pages RAM,
    # HighMem/MovableOnly (no highmem on the modelled 64-bit machine), reserved, the number
    # of nodes with memory (every node: hugetlb_show_meminfo lists them all)
    totals = [pagecache, 0, m.swap_free, m.total_swap_pages, present, 0, present - managed,
              len(m.nodes)]
    m.emit("sim:show_mem", cur.pid, vm, nodes, zrows, totals)


def memory_stat(m: "Machine", memcg: "MemCgroup") -> list[list[Any]]:
    """memory_stat_format's values that the model keeps, as ``[key, value]`` pairs (sizes in
    bytes, events in pages).  Kernel stacks, page tables, slab, dirty and writeback page
    cache are not charged to memcgs in the model, so they are 0 as the memcg's own; the workingset
    activations and restores, page faults and LRU moves are not kept per memcg and are left
    out."""
    subtree = for_each_mem_cgroup_tree(memcg)
    members = set(map(id, subtree))
    root = m.root_mem_cgroup
    anon = shmem = mapped_file = 0
    mms = []
    for mm in m.mms:
        c = mm.memcg if mm.memcg is not None else root
        if id(c) in members:
            mms.append(mm)
            anon += sum(mm.anon)  # charged once, copy-on-write sharers included
            shmem += mm.rss_shmem
            mapped_file += mm.rss_file
    unmapped = sum(sum(c.file) for c in subtree)
    aa = af = i_f = 0
    for z in m.zones:
        for mm in mms:
            aa += _active(z, ANON, mm)
        for owner in (*mms, *subtree):
            a = _active(z, FILE, owner)
            af += a
            i_f += owner_pages(z, FILE, owner) - a
    ia = anon + shmem - aa
    refaults = m.memcg_refaults.get(memcg, (0, 0))
    page = 4096
    return [["anon", anon * page], ["file", (mapped_file + unmapped + shmem) * page],
            ["kernel", sum(c.kmem for c in subtree) * page], ["kernel_stack", 0], ["pagetables", 0], ["sec_pagetables", 0],
            ["percpu", 0], ["sock", 0], ["vmalloc", 0], ["shmem", shmem * page],
            ["file_mapped", (mapped_file + shmem) * page], ["file_dirty", 0], ["file_writeback", 0],
            ["swapcached", 0], ["anon_thp", 0], ["file_thp", 0], ["shmem_thp", 0],
            ["inactive_anon", ia * page], ["active_anon", aa * page], ["inactive_file", i_f * page],
            ["active_file", af * page], ["unevictable", 0], ["slab_reclaimable", 0],
            ["slab_unreclaimable", 0], ["slab", 0],
            ["workingset_refault_anon", refaults[0]], ["workingset_refault_file", refaults[1]],
            ["pgscan", memcg.pgscan], ["pgsteal", memcg.pgsteal],
            ["pglazyfree", 0], ["pglazyfreed", 0], ["thp_fault_alloc", 0], ["thp_collapse_alloc", 0]]
