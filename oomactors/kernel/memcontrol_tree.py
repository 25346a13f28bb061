"""The memory cgroup tree (cgroup v2, mm/memcontrol.c and include/linux/memcontrol.h, 5.10):
struct mem_cgroup with its page counters (:mod:`.page_counter`), the hierarchy walks,
memory.events, and what the OOM killer reads of a memcg (memory.oom.group, the report).

Charging and uncharging, and the memcg OOM they may lead to, are in :mod:`.memcontrol`;
memory.high's reclaim and throttling in :mod:`.memcontrol_high`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .page_counter import PAGE_COUNTER_MAX, PageCounter
from .task import MM, PAGE_SIZE

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .task import Task

# memory.events, in the order the file prints them.  oom_group_kill is 5.17's counter
# (MEMCG_OOM_GROUP_KILL); 5.10 has no such line, the model counts it anyway.
MEMCG_EVENTS = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill")


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
