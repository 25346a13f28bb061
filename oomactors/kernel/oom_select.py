"""Choosing the OOM killer's victim (mm/oom_kill.c, Linux 5.10): struct oom_control, which
memory the OOM is about (constrained_alloc), who is eligible, the badness score, and
select_bad_process asking the run's kill policy.

The default policy, ``policies.linux``, is exactly the kernel's loop here
(:func:`select_bad_process_in` over :func:`oom_evaluate_task`); any policy sees the
same candidates, built by :func:`oom_context`.  Killing the choice is
:mod:`.oom_victim`'s; the entry points are in :mod:`.oom_kill`.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from policies import api
from policies.api import OomContext, TaskView

from . import gfp as G
from .cpuset import cpuset_mems_allowed_intersects, cpuset_name, cpuset_zone_allowed
from .memcontrol_tree import mem_cgroup_scan_tasks, task_memcg_path
from .mempolicy import mempolicy_nodemask_intersects
from .mmzone import totalreserve_pages
from .task import MMF_OOM_SKIP, OOM_SCORE_ADJ_MIN, PAGE_SIZE, PF_EXITING, Task

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .profiles import Profile

CONSTRAINT_NONE, CONSTRAINT_CPUSET, CONSTRAINT_MEMORY_POLICY, CONSTRAINT_MEMCG = range(4)
CONSTRAINT_NAMES = ("CONSTRAINT_NONE", "CONSTRAINT_CPUSET", "CONSTRAINT_MEMORY_POLICY", "CONSTRAINT_MEMCG")
LONG_MIN = -(1 << 63)
LONG_MAX = (1 << 63) - 1
ABORT = object()  # oc->chosen == (void *)-1UL: a victim is still on its way out


class OomControl:
    """struct oom_control."""

    __slots__ = ("zonelist", "nodemask", "memcg", "gfp_mask", "order", "totalpages", "chosen",
                 "chosen_points", "constraint", "kill_group")

    def __init__(self, zonelist: list, nodemask: frozenset[int] | None, memcg: Any, gfp_mask: int,
                 order: int) -> None:
        self.zonelist = zonelist
        self.nodemask = nodemask
        self.memcg = memcg
        self.gfp_mask = gfp_mask
        self.order = order
        self.totalpages = 0
        self.chosen: Task | object | None = None
        self.chosen_points = LONG_MIN
        self.constraint = CONSTRAINT_NONE
        self.kill_group: Any = None  # a policy's whole-cgroup kill: the memcg to kill


def is_memcg_oom(oc: OomControl) -> bool:
    return oc.memcg is not None


def is_sysrq_oom(oc: OomControl) -> bool:
    return oc.order == -1


# --- eligibility and scoring ------------------------------------------------------------
def oom_unkillable_task(p: Task) -> bool:
    """init and kernel threads are never killed."""
    return p.is_global_init or p.is_kthread


def oom_cpuset_eligible(m: "Machine", start: Task, oc: OomControl, cur: Task) -> bool:
    """A candidate must be able to free memory where the allocation needs it."""
    if is_memcg_oom(oc):
        return True
    if oc.nodemask is None and cur.mems_allowed is None:
        return bool(start.signal.threads)  # current may use every node: any thread intersects
    for t in start.signal.threads:
        if oc.nodemask is not None:
            # a mempolicy-constrained OOM: the thread's cpuset is irrelevant, only a policy
            # that lets it hold memory on the nodemask's nodes makes it worth killing
            if mempolicy_nodemask_intersects(t, oc.nodemask):
                return True
        elif cpuset_mems_allowed_intersects(cur, t):
            # any other OOM: the thread's mems must share a node with current's
            return True
    return False


def find_lock_task_mm(p: Task) -> Task | None:
    """The first thread of p's group that still has an mm."""
    for t in p.signal.threads:
        if t.mm is not None:
            return t
    return None


def oom_badness(p: TaskView, totalpages: int) -> int:
    """rss + swap entries + page-table pages, plus oom_score_adj in units of totalpages/1000.

    The result may be negative (5.9+); LONG_MIN means "never pick this one"."""
    if p.flags & _UNKILLABLE:
        return LONG_MIN  # init, a kernel thread, or no thread left with an mm
    adj = p.oom_score_adj
    # explicitly unkillable, already reaped, or in the middle of vfork
    if adj == OOM_SCORE_ADJ_MIN or p.flags & _SKIPPED:
        return LONG_MIN
    points = p.rss + p.swapents + p.pgtables_bytes // PAGE_SIZE
    adj *= totalpages // 1000  # integer division first, as the kernel does
    return points + adj


_UNKILLABLE, _SKIPPED = api.UNKILLABLE, api.SKIPPED


def oom_task_view(m: "Machine", p: Task) -> TaskView:
    """A frozen copy of what the OOM killer reads of process p (find_lock_task_mm's thread)."""
    t = find_lock_task_mm(p)
    sig = p.signal
    flags = set()
    if p.is_global_init:
        flags.add(api.INIT)
    if p.is_kthread:
        flags.add(api.KTHREAD)
    if sig.oom_mm is not None:
        flags.add(api.OOM_VICTIM)
    if sig.group_exit or p.flags & PF_EXITING:
        flags.add(api.EXITING)
    # the threads' kill and CPU time in one plain loop (a view per process per OOM kill)
    killed = False
    cpu_ns = 0
    for th in sig.threads:
        cpu_ns += th.cpu_ns
        if th.sigkill:
            killed = True
    if killed:
        flags.add(api.KILLED)
    if getattr(sig, "oom_origin", False):
        flags.add(api.OOM_ORIGIN)
    # a victim's flags are read from the mm it had when it was picked (signal->oom_mm)
    mm_flags = sig.oom_mm if sig.oom_mm is not None else (t.mm if t is not None else None)
    if mm_flags is not None and mm_flags.flags & MMF_OOM_SKIP:
        flags.add(api.OOM_SKIP)
    parent = p.parent.tgid if p.parent is not None else 0
    if t is None:
        flags.add(api.NO_MM)
        return TaskView(p.pid, p.tgid, p.comm, p.uid, sig.oom_score_adj, cpu_ns=cpu_ns,
                        start_time=p.start_time, nice=p.nice, memcg=task_memcg_path(p),
                        cpuset=cpuset_name(p), caps=p.caps, flags=frozenset(flags), ppid=parent)
    if t.in_vfork:
        flags.add(api.IN_VFORK)
    mm = t.mm
    return TaskView(t.pid, t.tgid, t.comm, t.uid, sig.oom_score_adj, mm.rss_anon, mm.rss_file,
                    mm.rss_shmem, mm.swapents, mm.pgtables_bytes(), mm.total_vm, cpu_ns,
                    p.start_time, p.nice, task_memcg_path(t), cpuset_name(t), p.caps,
                    frozenset(flags) if flags else _NO_FLAGS, parent, mm.id)


_NO_FLAGS: frozenset[str] = frozenset()  # most candidates: one shared empty set


def oom_context(m: "Machine", oc: OomControl, cur: Task) -> tuple[OomContext, dict[int, Task]]:
    """The policy's view of this OOM: oc, the allocating task and every candidate the
    kernel's scan would evaluate (the memcg's tasks, or every process; not init or kernel
    threads; not tasks that cannot free memory where it is needed), in scan order."""
    scan = mem_cgroup_scan_tasks(m, oc.memcg) if is_memcg_oom(oc) else m.processes()
    tasks: dict[int, Task] = {}
    views = []
    select_24 = m.profile.select_24  # 2.4 skips pid 0 only: init is a candidate
    for p in scan:
        if (p.is_kthread if select_24 else oom_unkillable_task(p)) or not oom_cpuset_eligible(m, p, oc, cur):
            continue
        v = oom_task_view(m, p)
        tasks[v.pid] = p
        views.append(v)
    zones = [z for z in oc.zonelist if oc.nodemask is None or z.node.nid in oc.nodemask] or m.zones
    ctx = OomContext(CONSTRAINT_NAMES[oc.constraint], oc.totalpages, oc.gfp_mask,
                     G.format_gfp(oc.gfp_mask), oc.order, oom_task_view(m, cur),
                     oc.memcg.path if is_memcg_oom(oc) else None, m.profile.name, tuple(views),
                     m.now, m.hz, sum(z.nr_free for z in zones),
                     sum(z.nr["file"] + z.nr["dirty"] + z.nr["writeback"] for z in zones), totalreserve_pages(m),
                     MappingProxyType(dict(m.fixes)))
    return ctx, tasks


def oom_evaluate_task(ctx: OomContext, task: TaskView, state: list, prof: "Profile") -> bool:
    """One step of the kernel's scan; ``state`` is [chosen, chosen_points].  True stops the
    scan: a victim is still on its way out."""
    # a victim without MMF_OOM_SKIP is still freeing memory: wait for it, kill nobody else
    flags = task.flags
    if api.OOM_VICTIM in flags and not prof.select_24:  # 2.4 waits for no victim
        status = api.victim_status(ctx, task)
        if status is api.VICTIM_SKIP:
            return False
        if status is api.VICTIM_PENDING:
            state[0] = api.Abort(f"victim {task.pid} ({task.comm}) pending")
            return True
    if api.OOM_ORIGIN in flags:
        points = LONG_MAX
    else:
        points = prof.badness(task, ctx.totalpages, ctx.now, ctx.hz)
        # 5.3+: ties go to the later task ('<', not '<='); before, the first one stays
        if points == prof.ineligible or points < state[1]:
            return False
        if points == state[1] and not prof.ties_to_later and state[0] is not None:
            return False
    state[0] = task
    state[1] = points
    return False


def select_bad_process_in(ctx: OomContext, prof: "Profile") -> api.Decision:
    """The kernel's loop: every candidate, in scan order, through oom_evaluate_task, with
    the badness, eligibility and tie rule of the era ``prof``."""
    state: list = [None, LONG_MIN]
    for t in ctx.candidates:
        if oom_evaluate_task(ctx, t, state, prof):
            break
    chosen = state[0]
    if chosen is None:
        return api.NothingKillable()
    if isinstance(chosen, api.Abort):
        return chosen
    return api.Kill(chosen.pid, state[1])


def pending_victim(m: "Machine", oc: OomControl, cur: Task) -> bool:
    """Would the kernel's scan abort on an earlier victim still on its way out?  The same
    answer as oom_evaluate_task's over the candidates (any candidate that is a victim whose
    mm has no MMF_OOM_SKIP aborts the scan, wherever it comes in scan order), read without
    building a view of every process."""
    if oc.order == -1 or not m.fixes.get("pending_victim_abort", True):
        return False  # a sysrq OOM ignores victims; the switch off skips them all
    skip_counts = m.fixes.get("mmf_oom_skip", True)
    scan = mem_cgroup_scan_tasks(m, oc.memcg) if is_memcg_oom(oc) else m.processes()
    for p in [p for p in scan if p.signal.oom_mm is not None]:  # the few victims, in one pass
        oom_mm = p.signal.oom_mm
        if oom_unkillable_task(p) or not oom_cpuset_eligible(m, p, oc, cur):
            continue
        if not (oom_mm.flags & MMF_OOM_SKIP and skip_counts):
            return True
    return False


def kernel_loop_profile(m: "Machine", policy: Any) -> "Profile | None":
    """The era profile when the run's policy is the kernel's own selection with 5.9+'s
    oom_badness (``policies.linux``'s select, not overridden): select_bad_process_tasks
    then gives its answer.  None: ask the policy over the candidates' views."""
    if not getattr(type(policy).select, "kernel_loop", False):
        return None
    from .profiles import PROFILES, badness_510  # profiles imports this module
    prof = PROFILES.get(getattr(policy, "era", None) or m.profile.name)
    return prof if prof is not None and prof.badness is badness_510 else None


def select_bad_process_tasks(m: "Machine", oc: OomControl, cur: Task, prof: "Profile") -> tuple[Any, int]:
    """select_bad_process_in over oom_context's candidates, for an era whose badness is
    oom_badness (5.9+), read from each task and its mm as mm/oom_kill.c does rather than
    from a view per candidate: (chosen task, ABORT or None; its points).  The same scan
    order, eligibility, victim handling, badness and tie rule; tests/test_oom_loop.py
    compares the two."""
    scan = mem_cgroup_scan_tasks(m, oc.memcg) if is_memcg_oom(oc) else m.processes()
    select_24 = m.profile.select_24  # the scan of 2.4 skips kernel threads only
    waits = not prof.select_24 and oc.order != -1  # victim_status: none for sysrq
    skip_reaped = m.fixes.get("mmf_oom_skip", True)
    aborts = m.fixes.get("pending_victim_abort", True)
    unit = oc.totalpages // 1000
    ineligible, ties_to_later = prof.ineligible, prof.ties_to_later
    chosen: Any = None
    chosen_points = LONG_MIN
    for p in scan:
        # oom_context's candidates
        if (p.is_kthread if select_24 else oom_unkillable_task(p)) or not oom_cpuset_eligible(m, p, oc, cur):
            continue
        init = p.is_global_init
        sig = p.signal
        t = find_lock_task_mm(p)
        oom_mm = sig.oom_mm
        flags_mm = oom_mm if oom_mm is not None else (t.mm if t is not None else None)
        reaped = flags_mm is not None and flags_mm.flags & MMF_OOM_SKIP
        if oom_mm is not None and waits:
            if (reaped and skip_reaped) or not aborts:
                continue
            return ABORT, LONG_MIN  # a victim is still on its way out
        if getattr(sig, "oom_origin", False):
            chosen, chosen_points = p, LONG_MAX
            continue
        adj = sig.oom_score_adj
        if init or t is None or reaped or t.in_vfork or adj == OOM_SCORE_ADJ_MIN:
            points = LONG_MIN
        else:
            mm = t.mm
            points = (mm.rss_anon + sum(mm.file) + sum(mm.shmem) + mm.swapents + sum(mm.pgtables)
                      + adj * unit)
        if points == ineligible or points < chosen_points:
            continue
        if points == chosen_points and not ties_to_later and chosen is not None:
            continue
        chosen, chosen_points = p, points
    return chosen, chosen_points


def select_bad_process(m: "Machine", oc: OomControl, cur: Task) -> None:
    """Ask the run's kill policy for a victim and check its answer (oc.chosen: a task,
    ABORT or None)."""
    policy = m.policy
    if getattr(policy, "aborts_on_pending_victim", False) and pending_victim(m, oc, cur):
        # the kernel's own selection would abort: no view of every process is needed
        oc.chosen = ABORT
        return
    prof = kernel_loop_profile(m, policy)
    if prof is not None:
        # the kernel's own selection: its loop over the tasks, no view of any candidate
        oc.chosen, points = select_bad_process_tasks(m, oc, cur, prof)
        if oc.chosen is not ABORT and oc.chosen is not None:
            oc.chosen_points, oc.kill_group = points, None
        return
    ctx, tasks = oom_context(m, oc, cur)
    try:
        decision = policy.select(ctx)
    except Exception as exc:  # noqa: BLE001 - the user's policy, reported by name
        raise api.PolicyError(f"policy {policy.name!r} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(decision, api.Kill):
        victim = tasks.get(decision.pid) if isinstance(decision.pid, int) else None
        if victim is None:
            raise api.PolicyError(f"policy {policy.name!r} chose pid {decision.pid!r}, which is not one of "
                                  f"the {len(tasks)} candidates of this OOM")
        if not isinstance(decision.points, int):
            raise api.PolicyError(f"policy {policy.name!r} gave points {decision.points!r}: expected an int")
        if decision.whole_cgroup and victim.memcg is None:
            raise api.PolicyError(f"policy {policy.name!r} asked to kill the whole cgroup of pid "
                                  f"{victim.pid}, which is in the root cgroup")
        oc.chosen, oc.chosen_points = victim, decision.points
        oc.kill_group = victim.memcg if decision.whole_cgroup else None
    elif isinstance(decision, api.Abort):
        oc.chosen = ABORT
    elif isinstance(decision, api.NothingKillable):
        oc.chosen = None
    else:
        raise api.PolicyError(f"policy {policy.name!r} returned {decision!r}: expected Kill, Abort or "
                              "NothingKillable")


def constrained_alloc(m: "Machine", oc: OomControl, cur: Task) -> int:
    """Which memory the OOM is about, and how many pages that is (totalpages)."""
    if is_memcg_oom(oc):
        oc.totalpages = max(1, oc.memcg.max_pages())
        return CONSTRAINT_MEMCG
    oc.totalpages = m.totalram_pages + m.total_swap_pages
    if len(m.nodes) == 1 or not oc.zonelist:
        return CONSTRAINT_NONE        # !CONFIG_NUMA in effect, or the page-fault path
    if oc.gfp_mask & G.__GFP_THISNODE:
        return CONSTRAINT_NONE        # only __GFP_NOFAIL gets here: no way to handle it
    # not __GFP_THISNODE, so a nodemask short of every node with memory is a mempolicy's
    if oc.nodemask is not None and not m.all_nodes <= oc.nodemask:
        oc.totalpages = m.total_swap_pages + sum(m.node_present_pages(n) for n in sorted(oc.nodemask))
        return CONSTRAINT_MEMORY_POLICY
    # did the cpuset's wall make the allocation fail?
    highest_zoneidx = G.gfp_zone(oc.gfp_mask)
    nm = oc.nodemask
    cpuset_limited = False
    for z in oc.zonelist:
        if z.idx > highest_zoneidx or (nm is not None and z.node.nid not in nm):
            continue
        if not cpuset_zone_allowed(m, cur, z, oc.gfp_mask):
            cpuset_limited = True
    if cpuset_limited:
        mems = cur.mems_allowed if cur.mems_allowed is not None else m.all_nodes
        oc.totalpages = m.total_swap_pages + sum(m.node_present_pages(n) for n in sorted(mems))
        return CONSTRAINT_CPUSET
    return CONSTRAINT_NONE
