"""Tasks, thread groups and address spaces (include/linux/sched.h, mm_types.h).

A :class:`Task` is one thread; threads of a process share a :class:`Signal`
(signal_struct: ``oom_score_adj``, ``oom_mm``, group exit) and an :class:`MM`.
CLONE_VM children are separate processes that share the parent's :class:`MM` -- the
case ``__oom_kill_process`` has to hunt down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .mmzone import Zone

# task->flags
PF_EXITING = 0x4
PF_MEMALLOC = 0x800
PF_DUMPCORE = 0x200
PF_KSWAPD = 0x20000
PF_KTHREAD = 0x200000

# mm->flags
MMF_OOM_SKIP = 1 << 21
MMF_UNSTABLE = 1 << 22
MMF_OOM_VICTIM = 1 << 25
MMF_OOM_REAP_QUEUED = 1 << 26

OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000
PAGE_SIZE = 4096
PTRS_PER_PTE = 512

CAPS = ("CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_SYS_RAWIO", "CAP_IPC_LOCK", "CAP_KILL")


class RWSem:
    """mmap_lock: readers share it, a writer excludes all; waiters queue in FIFO order.

    The owner can hold it across a sleep -- the situation the oom_reaper's trylock is for.
    """

    def __init__(self) -> None:
        self.readers = 0
        self.writer: Task | None = None
        self.waiters: list[tuple[Task, bool, Any]] = []  # (task, write, waiter)

    def read_trylock(self) -> bool:
        if self.writer is None and (not self.waiters or not any(w for _, w, _ in self.waiters)):
            self.readers += 1
            return True
        return False

    def write_trylock(self, task: "Task") -> bool:
        if self.writer is None and self.readers == 0:
            self.writer = task
            return True
        return False

    def wake_waiters(self) -> None:
        while self.waiters:
            task, write, waiter = self.waiters[0]
            if write:
                if self.writer is None and self.readers == 0:
                    self.waiters.pop(0)
                    self.writer = task
                    waiter.wake()
                return
            if self.writer is not None:
                return
            self.waiters.pop(0)
            self.readers += 1
            waiter.wake()

    def read_unlock(self) -> None:
        self.readers -= 1
        self.wake_waiters()

    def write_unlock(self) -> None:
        self.writer = None
        self.wake_waiters()


class MM:
    """mm_struct: rss counters, swap entries, page tables, flags and mmap_lock."""

    _next_id = 0

    def __init__(self, nzones: int) -> None:
        MM._next_id += 1
        self.id = MM._next_id
        self.anon = [0] * nzones       # MM_ANONPAGES, by zone (reclaim needs the zone)
        self.shmem = [0] * nzones      # MM_SHMEMPAGES
        self.file = [0] * nzones       # MM_FILEPAGES (mapped page cache)
        self.pgtables = [0] * nzones   # page-table pages, by zone
        self.swapents = 0              # MM_SWAPENTS
        self.shmem_swap = 0            # swapped-out pages of the shmem it created (kernel/shmem.py)
        self.total_vm = 0              # pages
        # copy-on-write after fork (kernel/cow.py): pages of cow_from's anon this mm still
        # maps, by zone; counted in this mm's MM_ANONPAGES, held physically by cow_from
        self.cow = [0] * nzones
        self.cow_from: MM | None = None
        # Committed_AS charges this mm carries (kernel/util.py): VM_ACCOUNT mappings
        # (private writable anon) and the shmem objects it created
        self.vm_accounted = 0
        self.shmem_accounted = 0
        self.flags = 0
        self.users = 0                 # mm_users
        self.mmap_lock = RWSem()
        self.owner: Task | None = None
        self.last_active = 0
        self.memcg: Any = None         # mem_cgroup of the owner (None: the root memcg)
        self.rss_sampled = (0, 0, 0, 0)  # the last kmem:rss_stat sample (file, anon, swap, shmem)

    def __repr__(self) -> str:
        return f"<MM {self.id}>"

    def cow_pages(self, g: int) -> int:
        """Pages of zone ``g`` this mm maps copy-on-write that cow_from still holds."""
        src = self.cow_from
        return 0 if src is None else min(self.cow[g], src.anon[g])

    @property
    def rss_anon(self) -> int:
        """MM_ANONPAGES: the pages it holds and those it shares copy-on-write."""
        anon = sum(self.anon)
        src = self.cow_from
        if src is not None:  # cow_pages of every zone, in one loop (a view per OOM kill)
            for cow, held in zip(self.cow, src.anon):
                anon += cow if cow < held else held
        return anon

    @property
    def rss_file(self) -> int:
        return sum(self.file)

    @property
    def rss_shmem(self) -> int:
        return sum(self.shmem)

    def get_mm_rss(self) -> int:
        return self.rss_anon + sum(self.file) + sum(self.shmem)

    def mapped_pages(self) -> int:
        # get_mm_rss() + swapents, in one frame (every fault asks it)
        pages = sum(self.anon) + sum(self.file) + sum(self.shmem) + self.swapents
        src = self.cow_from
        if src is not None:  # cow_pages of every zone, as in rss_anon
            for cow, held in zip(self.cow, src.anon):
                pages += cow if cow < held else held
        return pages

    def pgtables_bytes(self) -> int:
        return sum(self.pgtables) * PAGE_SIZE

    def pgtables_needed(self) -> int:
        """One PTE page per 512 mapped-or-swapped pages (upper levels ignored)."""
        return -(-self.mapped_pages() // PTRS_PER_PTE)


class Signal:
    """signal_struct: shared by the threads of one process."""

    # SIGTERM's disposition (kernel/signal.py): "default" (kills like SIGKILL), "handler"
    # (cleans up for sigterm_delay jiffies, then exits) or "ignore"
    sigterm_action = "default"
    sigterm_delay = 0
    in_sigterm_handler = False

    def __init__(self, oom_score_adj: int) -> None:
        self.oom_score_adj = oom_score_adj
        self.oom_score_adj_min = min(0, oom_score_adj)
        self.oom_mm: MM | None = None
        self.group_exit = False        # SIGNAL_GROUP_EXIT
        self.coredump = False
        self.threads: list[Task] = []

    def live_threads(self) -> list["Task"]:
        return [t for t in self.threads if not t.dead]


class Task:
    """task_struct, reduced to what the OOM path reads and writes."""

    def __init__(self, pid: int, tgid: int, comm: str, uid: int, caps: frozenset[str],
                 signal: Signal, mm: MM | None, *, kthread: bool = False, nice: int = 0,
                 start_time: int = 0) -> None:
        self.pid = pid
        self.tgid = tgid
        self.comm = comm[:15]
        self.uid = uid
        self.caps = caps
        self.signal = signal
        self.mm = mm
        self.flags = PF_KTHREAD if kthread else 0
        self.nice = nice
        self.start_time = start_time
        self.memdie = False            # TIF_MEMDIE
        self.sigkill = False           # SIGKILL pending
        self.sigterm = False
        self.in_vfork = False
        self.dead = False
        self.exit_reason = ""
        self.kmem: list = []           # (zone, kind, pages) of its stack and task structures
        self.cpu_ns = 0                # utime + stime
        self.cpu_debt_ns = 0           # CPU time not yet turned into virtual jiffies
        self.cpu: Any = None           # the CPU it is dispatched on, or None
        self.last_cpu = 0
        self.wake_on_signal: Any = None  # the waiter of a killable/interruptible sleep
        self.sleeper: Any = None       # sched.py: a Waiter the clock woke, kept for its next sleep
        self.oom_reaper_list = False
        self.mems_allowed: frozenset[int] | None = None  # None = every node
        self.cpuset: Any = None        # kernel.cpuset.Cpuset, or None for the root cpuset
        self.cpus_allowed: frozenset[int] | None = None  # None = every CPU
        self.mempolicy: Any = None     # kernel.mempolicy.Mempolicy, or None (MPOL_DEFAULT)
        self.il_prev = (1 << 10) - 1   # last interleave node (MAX_NUMNODES - 1: none yet)
        self.outcome = "running"
        self.group: str = comm
        self.memcg: Any = None         # its memory cgroup (None: the root memcg)
        self.memcg_nr_pages_over_high = 0  # charged above memory.high, to pay back
        self.parent: Task | None = None  # real_parent, for 2.6.36-5.0's "sacrifice child"
        signal.threads.append(self)
        if mm is not None:
            mm.users += 1
            if mm.owner is None:
                mm.owner = self

    def __repr__(self) -> str:
        return f"<Task {self.pid} {self.comm}>"

    @property
    def is_kthread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)

    @property
    def is_global_init(self) -> bool:
        return self.tgid == 1

    def is_leader(self) -> bool:
        return self.pid == self.tgid

    def fatal_signal_pending(self) -> bool:
        return self.sigkill

    def tsk_is_oom_victim(self) -> bool:
        return self.signal.oom_mm is not None


