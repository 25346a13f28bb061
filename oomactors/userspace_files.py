"""What a userspace OOM killer reads: ``/proc`` and cgroup files as frozen snapshots in the
files' own units (kB, bytes, pages where the file says pages), computed from the machine
the way the kernel computes them (MemAvailable as ``si_mem_available``, ``oom_score`` as
the run's kernel profile scores).  :class:`oomactors.userspace.DaemonHost` hands them out
and charges the daemon for each read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .kernel.memcontrol import MEMCG_EVENTS, for_each_mem_cgroup_tree
from .kernel.mmzone import totalreserve_pages
from .kernel.oom_kill import find_lock_task_mm
from .kernel.page_counter import PAGE_COUNTER_MAX
from .kernel.task import PAGE_SIZE

if TYPE_CHECKING:  # pragma: no cover
    from .kernel.memcontrol import MemCgroup
    from .kernel.task import Task
    from .machine import Machine

KB = 1024

# --- the snapshots --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Meminfo:
    """``/proc/meminfo``, in kB (the file's unit; the names are the file's)."""

    MemTotal: int
    MemFree: int
    MemAvailable: int
    Cached: int
    AnonPages: int
    Shmem: int
    SReclaimable: int
    SUnreclaim: int
    PageTables: int
    Dirty: int
    Writeback: int
    SwapTotal: int
    SwapFree: int
    Committed_AS: int
    CommitLimit: int


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """One process of ``/proc`` (a thread-group leader), as the files under /proc/PID show
    it: sizes in kB (``vm_rss_kb`` is VmRSS: anon + file + shmem), ``oom_score`` in the
    kernel profile's own scale, ``start_time`` in jiffies."""

    pid: int
    ppid: int
    comm: str
    cmdline: str
    uid: int
    oom_score: int
    oom_score_adj: int
    vm_rss_kb: int
    rss_anon_kb: int
    rss_file_kb: int
    rss_shmem_kb: int
    vm_swap_kb: int
    vm_size_kb: int
    cgroup: str
    threads: int
    state: str                 # "R" running or runnable, "S" sleeping
    start_time: int
    cpu_ns: int
    nice: int
    kthread: bool

    @property
    def statm_rss(self) -> int:
        """/proc/PID/statm's resident field, in pages."""
        return self.vm_rss_kb // (PAGE_SIZE // KB)


@dataclass(frozen=True, slots=True)
class MemoryStat:
    """``memory.stat`` of a cgroup (hierarchical): sizes in bytes, event counts in pages
    (the workingset refaults of pages charged to the cgroup, kernel/workingset.py)."""

    anon: int
    file: int
    shmem: int
    kernel: int
    pgscan: int
    pgsteal: int
    workingset_refault_anon: int = 0
    workingset_refault_file: int = 0


@dataclass(frozen=True, slots=True)
class CgroupInfo:
    """A cgroup directory.  Sizes in bytes; ``None`` for a limit of "max".  The root has no
    memory.* files in cgroup v2: its ``memory_current`` is MemTotal - MemAvailable (what
    systemd-oomd and oomd use for it), its ``memory_swap_current`` the swap in use, its
    limits None, its stat the machine's."""

    path: str
    parent: str | None
    children: tuple[str, ...]
    procs: tuple[int, ...]           # cgroup.procs: processes directly in this cgroup
    memory_current: int
    memory_swap_current: int
    memory_max: int | None
    memory_high: int | None
    memory_swap_max: int | None
    memory_min: int
    memory_low: int
    oom_group: bool
    stat: MemoryStat
    events: tuple[tuple[str, int], ...]  # memory.events, in the file's order
    populated: bool                  # cgroup.events: a process in the subtree

    @property
    def is_root(self) -> bool:
        return self.parent is None


@dataclass(frozen=True, slots=True)
class ZoneInfo:
    """One zone of ``/proc/zoneinfo`` (pages)."""

    node: int
    name: str
    free: int
    min: int
    low: int
    high: int
    present: int
    managed: int
    protection: tuple[int, ...]
    nr_anon: int
    nr_file: int


# --- computing what the files say --------------------------------------------------------------
def si_mem_available(m: "Machine") -> int:
    """MemAvailable in pages (mm/page_alloc.c si_mem_available): free pages above the
    reserves, plus the page cache and reclaimable slab that could go without swapping --
    at least half of each, or a low watermark's worth, is assumed to stay."""
    wmark_low = sum(z.low_wmark for z in m.zones)
    available = sum(z.vm_free for z in m.zones) - totalreserve_pages(m)
    pagecache = sum(z.nr["file"] + z.nr["dirty"] for z in m.zones)
    pagecache -= min(pagecache // 2, wmark_low)
    available += pagecache
    reclaimable = sum(z.nr["slab_reclaimable"] for z in m.zones)
    available += reclaimable - min(reclaimable // 2, wmark_low)
    return max(available, 0)


def meminfo(m: "Machine") -> Meminfo:
    from .kernel.util import vm_commit_limit
    nr = {k: sum(z.nr[k] for z in m.zones) for k in
          ("anon", "file", "dirty", "writeback", "shmem", "slab_reclaimable", "slab_unreclaimable",
           "pagetables")}
    free = max(0, sum(z.vm_free for z in m.zones))
    kb = PAGE_SIZE // KB
    return Meminfo(
        MemTotal=m.totalram_pages * kb, MemFree=free * kb, MemAvailable=si_mem_available(m) * kb,
        Cached=(nr["file"] + nr["dirty"] + nr["shmem"]) * kb, AnonPages=nr["anon"] * kb,
        Shmem=nr["shmem"] * kb, SReclaimable=nr["slab_reclaimable"] * kb,
        SUnreclaim=nr["slab_unreclaimable"] * kb, PageTables=nr["pagetables"] * kb,
        Dirty=nr["dirty"] * kb, Writeback=nr["writeback"] * kb,
        SwapTotal=m.total_swap_pages * kb, SwapFree=m.swap_free * kb,
        Committed_AS=m.vm_committed_as * kb, CommitLimit=vm_commit_limit(m) * kb)


def oom_score(m: "Machine", p: "Task") -> int:
    """/proc/PID/oom_score: the profile's badness against totalram + swap, in its scale
    (as sim.emit_oom_scores computes it)."""
    from .kernel.oom_kill import oom_task_view
    prof = m.profile
    total = m.totalram_pages + m.total_swap_pages
    return prof.oom_score(prof.badness(oom_task_view(m, p), total, m.now, m.hz), total)


def _held_kb(p: "Task | None") -> tuple[int, int]:
    """RSS (anon + file + shmem) and swap entries of a process, in kB (0, 0 if it has no mm)."""
    t = find_lock_task_mm(p) if p is not None else None
    if t is None:
        return 0, 0
    kb = PAGE_SIZE // KB
    return t.mm.get_mm_rss() * kb, t.mm.swapents * kb


def proc_info(m: "Machine", p: "Task") -> ProcInfo:
    from .kernel.oom_kill import oom_task_view
    v = oom_task_view(m, p)
    kb = PAGE_SIZE // KB
    live = p.signal.live_threads()
    kthread = p.is_kthread
    if p.parent is not None:
        ppid = p.parent.tgid
    else:
        ppid = 2 if kthread else (0 if p.is_global_init else 1)
    running = any(t.cpu is not None for t in live)
    return ProcInfo(
        pid=p.pid, ppid=ppid, comm=p.comm, cmdline="" if kthread else p.group, uid=p.uid,
        oom_score=oom_score(m, p), oom_score_adj=p.signal.oom_score_adj,
        vm_rss_kb=v.rss * kb, rss_anon_kb=v.rss_anon * kb, rss_file_kb=v.rss_file * kb,
        rss_shmem_kb=v.rss_shmem * kb, vm_swap_kb=v.swapents * kb, vm_size_kb=v.total_vm * kb,
        cgroup=v.memcg, threads=len(live), state="R" if running else "S",
        start_time=p.start_time, cpu_ns=v.cpu_ns, nice=p.nice, kthread=kthread)


def _limit(pages: int) -> int | None:
    return None if pages >= PAGE_COUNTER_MAX else pages * PAGE_SIZE


def cgroup_info(m: "Machine", memcg: "MemCgroup") -> CgroupInfo:
    subtree = for_each_mem_cgroup_tree(memcg)
    members = set(map(id, subtree))
    anon = file = shmem = 0
    for mm in m.mms:
        c = mm.memcg if mm.memcg is not None else m.root_mem_cgroup
        if id(c) in members:
            anon += sum(mm.anon)  # charged pages: copy-on-write sharers count once
            shmem += mm.rss_shmem
            file += mm.rss_file
    file += sum(sum(c.file) for c in subtree)
    procs = tuple(p.pid for p in m.processes()
                  if (p.memcg if p.memcg is not None else m.root_mem_cgroup) is memcg)
    populated = bool(procs) or any(
        p.memcg is not None and id(p.memcg) in members for p in m.processes())
    if memcg.is_root:
        mi = meminfo(m)
        stat = MemoryStat(anon * PAGE_SIZE, file * PAGE_SIZE, shmem * PAGE_SIZE, 0,
                          m.vmstat["pgscan"], m.vmstat["pgsteal"], m.vmstat["workingset_refault_anon"],
                          m.vmstat["workingset_refault_file"])
        return CgroupInfo("/", None, tuple(c.path for c in memcg.children), procs,
                          (mi.MemTotal - mi.MemAvailable) * KB,
                          (m.total_swap_pages - m.swap_free) * PAGE_SIZE, None, None, None, 0, 0,
                          False, stat, tuple((e, 0) for e in MEMCG_EVENTS), populated)
    mem = memcg.memory
    refaults = m.memcg_refaults.get(memcg, (0, 0))
    stat = MemoryStat(anon * PAGE_SIZE, file * PAGE_SIZE, shmem * PAGE_SIZE,
                      sum(c.kmem for c in subtree) * PAGE_SIZE, memcg.pgscan, memcg.pgsteal,
                      refaults[0], refaults[1])
    return CgroupInfo(memcg.path, memcg.parent.path, tuple(c.path for c in memcg.children), procs,
                      mem.usage * PAGE_SIZE, memcg.swap.usage * PAGE_SIZE, _limit(mem.max),
                      _limit(mem.high), _limit(memcg.swap.max), mem.min * PAGE_SIZE,
                      mem.low * PAGE_SIZE, memcg.oom_group, stat,
                      tuple((e, memcg.events[e]) for e in MEMCG_EVENTS), populated)
