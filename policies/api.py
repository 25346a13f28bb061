"""The kill-policy API: what a policy sees, and what it may answer.

Two kinds of policy exist:

* a **kernel-side** policy (:class:`KillPolicy`) replaces ``select_bad_process``: when the
  OOM killer runs, it gets an immutable :class:`OomContext` -- the constraint, totalpages,
  the gfp mask and order, the allocating task, the memcg, the kernel profile and one
  :class:`TaskView` per candidate, in the kernel's scan order -- and returns a decision:
  :class:`Kill` (a task, or with ``whole_cgroup`` every process of its memcg),
  :class:`Abort` (a victim is still on its way out: wait for it), or
  :class:`NothingKillable`.  It never touches the machine: everything it gets is a frozen
  copy, and the kernel model carries the decision out (report, SIGKILL, reaper).
* a **userspace** policy (:class:`Daemon`) is an actor of its own that polls what the real
  daemon reads (``/proc/meminfo``, PSI, cgroup files, the process table) and acts by
  signals or cgroup kills; see :mod:`oomactors.userspace`.

Both take parameters from the config's ``[policy]`` table, validated against the policy's
``Params`` pydantic model.  A policy that raises, or answers anything but a decision about
one of its candidates, stops the run with a :class:`PolicyError` naming it.

A complete kernel-side policy (``--policy mymod:Smallest``)::

    from pydantic import BaseModel
    from policies.api import KillPolicy, Kill, NothingKillable, OOM_SCORE_ADJ_MIN

    class Smallest(KillPolicy):
        '''Kill the smallest task above a size floor (a toy).'''
        name = "smallest"
        description = "the smallest killable task above min_rss_pages"

        class Params(BaseModel):
            min_rss_pages: int = 256

        def select(self, ctx):
            pending = self.pending_victim(ctx)
            if pending is not None:          # keep the kernel's protection against over-kill
                return pending
            fit = [t for t in ctx.killable() if t.rss >= self.params.min_rss_pages]
            if not fit:
                return NothingKillable()
            best = min(fit, key=lambda t: (t.rss, t.pid))
            return Kill(best.pid, points=best.rss)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Union

from oomactors.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from pydantic import BaseModel

OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000
PAGE_SIZE = 4096

# TaskView.flags
INIT = "init"                # the global init (pid 1): never killed
KTHREAD = "kthread"          # a kernel thread: never killed
NO_MM = "no_mm"              # no thread of the process has an mm any more
OOM_VICTIM = "oom_victim"    # tsk_is_oom_victim: an earlier OOM kill picked it
OOM_SKIP = "oom_skip"        # its mm has MMF_OOM_SKIP: reaped, or given up on
EXITING = "exiting"          # PF_EXITING or a group exit in progress
KILLED = "killed"            # SIGKILL pending
IN_VFORK = "in_vfork"        # in the middle of vfork
OOM_ORIGIN = "oom_origin"    # marked as the OOM's origin (swapoff, ksm unmerge)


@dataclass(frozen=True, slots=True)
class TaskView:
    """One process as the OOM killer sees it (the thread that still has the mm).

    Memory fields are pages unless they say bytes; times are jiffies (``start_time``) and
    nanoseconds (``cpu_ns``, the whole thread group's utime + stime)."""

    pid: int
    tgid: int
    comm: str
    uid: int = 1000
    oom_score_adj: int = 0
    rss_anon: int = 0
    rss_file: int = 0
    rss_shmem: int = 0
    swapents: int = 0
    pgtables_bytes: int = 0
    total_vm: int = 0
    cpu_ns: int = 0
    start_time: int = 0
    nice: int = 0
    memcg: str = "/"
    cpuset: str = "/"
    caps: frozenset[str] = frozenset()
    flags: frozenset[str] = frozenset()
    ppid: int = 0
    mm_id: int = 0               # processes sharing an mm share this (0: unknown / none)

    @property
    def rss(self) -> int:
        return self.rss_anon + self.rss_file + self.rss_shmem

    def has(self, flag: str) -> bool:
        return flag in self.flags


@dataclass(frozen=True, slots=True)
class OomContext:
    """``struct oom_control`` plus what a policy may want to know about the machine."""

    constraint: str              # CONSTRAINT_NONE / _CPUSET / _MEMORY_POLICY / _MEMCG
    totalpages: int              # the size of the memory the OOM is about (pages)
    gfp_mask: int
    gfp: str                     # the mask as the console prints it
    order: int                   # -1: a sysrq-triggered OOM
    current: TaskView | None     # the allocating task
    memcg: str | None            # the OOM memcg's path, for a memcg OOM
    profile: str                 # the kernel profile of the run ("linux-5.10", ...)
    candidates: tuple[TaskView, ...]  # the scan: eligible for the constraint, in scan order
    now: int = 0                 # jiffies
    hz: int = 250
    free_pages: int = 0          # NR_FREE_PAGES over the eligible zones
    file_pages: int = 0          # page cache (NR_FILE_PAGES, shmem aside) over the eligible zones
    reserve_pages: int = 0       # totalreserve_pages: the zones' high watermarks + lowmem reserves
    fixes: Mapping[str, bool] = field(default_factory=dict)  # [kernel.fixes] switches

    @property
    def sysrq(self) -> bool:
        return self.order == -1

    def fix(self, name: str) -> bool:
        return self.fixes.get(name, True)

    def killable(self) -> list[TaskView]:
        """Candidates any sane policy may pick: not -1000, not reaped, with an mm, not in
        vfork, not already a victim."""
        return [t for t in self.candidates
                if t.oom_score_adj != OOM_SCORE_ADJ_MIN and not t.flags & _NOT_KILLABLE]

    def by_pid(self, pid: int) -> TaskView | None:
        for t in self.candidates:
            if t.pid == pid:
                return t
        return None


# what oom_badness never scores: init, kernel threads, no mm left; reaped or in vfork
UNKILLABLE = frozenset((INIT, KTHREAD, NO_MM))
SKIPPED = frozenset((OOM_SKIP, IN_VFORK))
_NOT_KILLABLE = UNKILLABLE | SKIPPED | {OOM_VICTIM}


# --- decisions --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Kill:
    """Kill this candidate (``whole_cgroup``: and every other process of its memcg, as
    memory.oom.group does).  ``points`` is what the report prints as its score."""

    pid: int
    points: int = 0
    whole_cgroup: bool = False


@dataclass(frozen=True, slots=True)
class Abort:
    """A victim is still exiting: kill nobody now, the allocation retries."""

    reason: str = "victim pending"


@dataclass(frozen=True, slots=True)
class NothingKillable:
    """No eligible task: a global OOM then panics ("System is deadlocked on memory")."""


Decision = Union[Kill, Abort, NothingKillable]


class PolicyError(InputError):
    """A policy that could not be loaded, raised, or answered nonsense."""


# --- the two kinds of policy -------------------------------------------------------------
class _Policy:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar["type[BaseModel] | None"] = None
    kind: ClassVar[str] = ""

    def __init__(self, params: Any = None) -> None:
        if params is None and self.Params is not None:
            params = self.Params()
        self.params = params

    def __repr__(self) -> str:
        return f"<{self.kind} policy {self.name}>"

    @classmethod
    def check_config(cls, params: Any, cfg: Any) -> list[tuple[tuple, str]]:
        """What is wrong with the validated ``params`` given the rest of the config ``cfg``
        (a cgroup path that names no declared memcg, ...): ``(key path below [policy],
        problem)`` pairs, none by default.  Config validation reports the first as its
        one-line error, so ``oomactors validate`` catches it before a run."""
        return []


def config_cgroups(cfg: Any) -> list[str]:
    """The cgroups a config declares, parents first: the root "/" and its ``[[memcgs]]``."""
    return ["/", *(m.path for m in cfg.memcgs)]


class KillPolicy(_Policy):
    """A kernel-side policy: choose the OOM victim."""

    kind: ClassVar[str] = "kernel"

    def select(self, ctx: OomContext) -> Decision:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def pending_victim(ctx: OomContext) -> Abort | None:
        """The kernel's guard in oom_evaluate_task: while any candidate is a victim whose
        mm is not yet reaped (no MMF_OOM_SKIP), kill nobody else (not for sysrq)."""
        for t in ctx.candidates:
            if victim_status(ctx, t) is VICTIM_PENDING:
                return Abort(f"victim {t.pid} ({t.comm}) pending")
        return None


VICTIM_PENDING = "pending"   # an earlier victim still freeing memory: abort the scan
VICTIM_SKIP = "skip"         # an earlier victim already reaped: not a candidate any more


def victim_status(ctx: OomContext, t: TaskView) -> str | None:
    """What oom_evaluate_task makes of an earlier OOM victim among the candidates (None:
    not a victim, or a sysrq OOM, which ignores victims).  The ``mmf_oom_skip`` and
    ``pending_victim_abort`` switches of ``[kernel.fixes]`` act here."""
    if ctx.sysrq or OOM_VICTIM not in t.flags:
        return None
    if (OOM_SKIP in t.flags and ctx.fix("mmf_oom_skip")) or not ctx.fix("pending_victim_abort"):
        return VICTIM_SKIP
    return VICTIM_PENDING


class Daemon(_Policy):
    """A userspace OOM killer: ``run(host)`` is its main loop, as an actor of the run."""

    kind: ClassVar[str] = "daemon"

    async def run(self, host: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
