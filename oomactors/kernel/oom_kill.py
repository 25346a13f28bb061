"""The OOM killer (mm/oom_kill.c, Linux 5.10): choose a victim, kill it, let the reaper
take its memory.

Branches are in the kernel's order, each with the reason it exists.  Victim selection
itself (``select_bad_process``) runs through the machine's kill policy; the default
policy, ``policies.linux``, is exactly the kernel's loop below.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from policies import api
from policies.api import OomContext, TaskView

from . import gfp as G
from . import params
from .cpuset import cpuset_mems_allowed_intersects, cpuset_name, cpuset_zone_allowed
from .memcontrol import (mem_cgroup_get_oom_group, mem_cgroup_print_oom_meminfo, mem_cgroup_scan_tasks,
                         memcg_memory_event, memcg_memory_event_mm, task_memcg_path)
from .mempolicy import mempolicy_nodemask_intersects
from .mmzone import totalreserve_pages
from .ratelimit import ___ratelimit
from .show_mem import memory_stat, show_mem
from .oom_kill_24 import oom_kill_task_24, out_of_memory_checklist
from .task import (MMF_OOM_REAP_QUEUED, MMF_OOM_SKIP, MMF_OOM_VICTIM, OOM_SCORE_ADJ_MIN,
                   PAGE_SIZE, PF_EXITING, Task)

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .profiles import Profile
    from .task import MM

CONSTRAINT_NONE, CONSTRAINT_CPUSET, CONSTRAINT_MEMORY_POLICY, CONSTRAINT_MEMCG = range(4)
CONSTRAINT_NAMES = ("CONSTRAINT_NONE", "CONSTRAINT_CPUSET", "CONSTRAINT_MEMORY_POLICY", "CONSTRAINT_MEMCG")
LONG_MIN = -(1 << 63)
LONG_MAX = (1 << 63) - 1
ABORT = object()  # oc->chosen == (void *)-1UL: a victim is still on its way out
SIGKILL = 9


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
    if any(th.sigkill for th in sig.threads):
        flags.add(api.KILLED)
    if getattr(sig, "oom_origin", False):
        flags.add(api.OOM_ORIGIN)
    # a victim's flags are read from the mm it had when it was picked (signal->oom_mm)
    mm_flags = sig.oom_mm if sig.oom_mm is not None else (t.mm if t is not None else None)
    if mm_flags is not None and mm_flags.flags & MMF_OOM_SKIP:
        flags.add(api.OOM_SKIP)
    cpu_ns = sum(th.cpu_ns for th in sig.threads)
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
    for p in scan:
        oom_mm = p.signal.oom_mm
        if oom_mm is None or oom_unkillable_task(p) or not oom_cpuset_eligible(m, p, oc, cur):
            continue
        if not (oom_mm.flags & MMF_OOM_SKIP and skip_counts):
            return True
    return False


def select_bad_process(m: "Machine", oc: OomControl, cur: Task) -> None:
    """Ask the run's kill policy for a victim and check its answer (oc.chosen: a task,
    ABORT or None)."""
    policy = m.policy
    if getattr(policy, "aborts_on_pending_victim", False) and pending_victim(m, oc, cur):
        # the kernel's own selection would abort: no view of every process is needed
        oc.chosen = ABORT
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


# --- dying tasks ------------------------------------------------------------------------
def __task_will_free_mem(task: Task) -> bool:
    sig = task.signal
    if sig.coredump:
        return False  # a coredump pins the mm
    if sig.group_exit:
        return True
    if len(sig.live_threads()) <= 1 and task.flags & PF_EXITING:
        return True
    return False


def task_will_free_mem(m: "Machine", task: Task) -> bool:
    """Will this task free its memory soon without our help (exiting or SIGKILLed, and so is
    every process sharing its mm)?"""
    mm = task.mm
    if mm is None:
        return False
    if not __task_will_free_mem(task):
        return False
    if mm.flags & MMF_OOM_SKIP and m.fixes.get("mmf_oom_skip", True):
        return False  # already reaped or given up: do not wait on it again
    if mm.users <= 1:
        return True
    for p in m.processes():
        if p.signal is task.signal or not process_shares_mm(p, mm):
            continue
        if not __task_will_free_mem(p):
            return False
    return True


def process_shares_mm(p: Task, mm: "MM") -> bool:
    return any(t.mm is mm for t in p.signal.threads)


# --- marking and killing --------------------------------------------------------------
def mark_oom_victim(m: "Machine", tsk: Task) -> None:
    """Give the victim access to memory reserves and remember its mm (signal->oom_mm)."""
    mm = tsk.mm
    if tsk.memdie:
        return  # a memcg and a global OOM can race here
    tsk.memdie = True
    if tsk.signal.oom_mm is None:
        tsk.signal.oom_mm = mm
        mm.flags |= MMF_OOM_VICTIM
    m.oom_victims += 1
    m.emit("oom:mark_victim", tsk.pid, tsk.comm, mm.total_vm * 4, mm.rss_anon * 4, mm.rss_file * 4,
           mm.rss_shmem * 4, tsk.uid, mm.pgtables_bytes() >> 10, tsk.signal.oom_score_adj)


def exit_oom_victim(m: "Machine", tsk: Task) -> None:
    tsk.memdie = False
    m.oom_victims -= 1


def wake_oom_reaper(m: "Machine", tsk: Task) -> None:
    """Queue the victim for the oom_reaper (LIFO: the newest victim is reaped first)."""
    if not m.profile.oom_reaper or not m.fixes.get("oom_reaper", True):
        return  # before 4.6 there was no reaper: a victim frees its memory itself
    mm = tsk.signal.oom_mm
    if mm is None or mm.flags & MMF_OOM_REAP_QUEUED:
        return
    mm.flags |= MMF_OOM_REAP_QUEUED
    if m.profile.reaper_delay_s and m.fixes.get("reaper_delay", True):
        # 5.18+ queue_oom_reaper: give the victim OOM_REAPER_DELAY to exit by itself
        m.spawn(_oom_reaper_timer, m, tsk, mm, m.profile.reaper_delay_s * m.hz)
        return
    __queue_for_reaper(m, tsk)


async def _oom_reaper_timer(m: "Machine", tsk: Task, mm: "MM", delay: int) -> None:
    """The oom_reaper_timer callback: the victim exited meanwhile, or it is reaped now."""
    await m.sched.clock.sleep_until(m.now + delay)
    if not mm.flags & MMF_OOM_SKIP:
        __queue_for_reaper(m, tsk)


def __queue_for_reaper(m: "Machine", tsk: Task) -> None:
    tsk.oom_reaper_list = True
    m.oom_reaper_list.insert(0, tsk)
    m.emit("oom:wake_reaper", tsk.pid)
    m.oom_reaper_wait.wake()


def do_send_sig_info(m: "Machine", sig: int, victim: Task, cur: Task) -> None:
    """SIGKILL to a whole thread group: every thread gets it, killable sleeps end."""
    victim.signal.group_exit = True
    for t in victim.signal.live_threads():
        t.sigkill = True
        m.sched.signal_wake(t)
    m.emit("signal:signal_generate", victim.pid, sig, victim.comm, 1, 0)


def dump_tasks(m: "Machine", oc: OomControl, cur: Task) -> list[list]:
    """The task table: every killable process with an mm, as dump_tasks prints it."""
    rows = []
    for p in mem_cgroup_scan_tasks(m, oc.memcg) if is_memcg_oom(oc) else m.processes():
        if oom_unkillable_task(p):
            continue
        if not is_memcg_oom(oc) and not oom_cpuset_eligible(m, p, oc, cur):
            continue
        t = find_lock_task_mm(p)
        if t is None:
            continue
        mm = t.mm
        rows.append([t.pid, t.uid, t.tgid, mm.total_vm, mm.get_mm_rss(), mm.pgtables_bytes(),
                     mm.swapents, t.signal.oom_score_adj, t.comm, mm.rss_anon, mm.rss_file,
                     mm.rss_shmem, t.last_cpu])
    return rows


def __ratelimit(m: "Machine", cur: Task) -> bool:
    """oom_kill_process's __ratelimit(&oom_rs): 10 reports per 5 s (lib/ratelimit.c)."""
    return ___ratelimit(m, m.oom_rs, "oom_kill_process", cur.pid)


async def dump_header(m: "Machine", oc: OomControl, cur: Task) -> None:
    rows = dump_tasks(m, oc, cur) if m.oom_dump_tasks else []
    if is_memcg_oom(oc):
        # printed after the "invoked oom-killer" line, where show_mem() is for a global OOM
        mem_cgroup_print_oom_meminfo(m, oc.memcg, cur)
        m.emit("sim:memcg_oom_stat", cur.pid, oc.memcg.path, memory_stat(m, oc.memcg))
    else:
        show_mem(m, oc.nodemask, cur)  # SHOW_MEM_FILTER_NODES
    nodemask = m.nodelist(oc.nodemask) if oc.nodemask is not None else "(null)"  # %*pbl
    mems = cur.mems_allowed if cur.mems_allowed is not None else m.all_nodes
    m.emit("sim:oom_header", cur.pid, cur.comm, G.format_gfp(oc.gfp_mask), oc.order,
           cur.signal.oom_score_adj, CONSTRAINT_NAMES[oc.constraint], nodemask, m.nodelist(mems),
           oc.totalpages, rows)
    # printk writes the report to the console synchronously, before the kill and with
    # oom_lock held: this is the time other allocators find the lock taken
    lines = params.OOM_REPORT_LINES + len(rows)
    await m.sched.run(cur, lines * params.PRINTK_NS_PER_LINE, "oom.report")


def __oom_kill_process(m: "Machine", victim: Task, message: str, oc: OomControl, cur: Task) -> None:
    p = find_lock_task_mm(victim)
    if p is None:
        m.emit("sim:oom_victim_exiting", victim.pid, message, victim.comm)
        return
    victim = p
    mm = victim.mm
    m.vmstat["oom_kill"] += 1
    memcg_memory_event_mm(m, mm, "oom_kill", cur.pid)  # memory.events of the mm owner's memcg
    if m.profile.select_24:
        oom_kill_task_24(m, victim)  # SIGTERM to a task with hardware access
    else:
        do_send_sig_info(m, SIGKILL, victim, cur)
    mark_oom_victim(m, victim)
    nodemask = m.nodelist(oc.nodemask) if oc.nodemask is not None else "(null)"  # %*pbl
    mems = cur.mems_allowed if cur.mems_allowed is not None else m.all_nodes
    m.emit("sim:oom_kill", victim.pid, message, victim.comm, mm.total_vm * 4, mm.rss_anon * 4,
           mm.rss_file * 4, mm.rss_shmem * 4, victim.uid, mm.pgtables_bytes() >> 10,
           victim.signal.oom_score_adj, CONSTRAINT_NAMES[oc.constraint], nodemask, m.nodelist(mems),
           cur.comm, cur.pid, cpuset_name(cur),
           oc.memcg.path if is_memcg_oom(oc) else "", task_memcg_path(victim))
    # kill every other process sharing the mm, or we would not free it
    can_oom_reap = True
    for p in m.processes():
        if not process_shares_mm(p, mm) or p.signal is victim.signal:
            continue
        if p.is_global_init:
            can_oom_reap = False
            mm.flags |= MMF_OOM_SKIP
            m.emit("sim:reaper_pinned", victim.pid, victim.comm, p.pid, p.comm)
            m.emit("sim:mmf_oom_skip", victim.pid, "init_pinned")
            continue
        if p.is_kthread:
            continue
        if m.profile.select_24:
            oom_kill_task_24(m, p)
        else:
            do_send_sig_info(m, SIGKILL, p, cur)
        m.emit("sim:oom_kill_shared", p.pid, p.comm, victim.pid, victim.comm)
    if can_oom_reap:
        wake_oom_reaper(m, victim)


def oom_sacrifice_child(m: "Machine", oc: OomControl, victim: Task, message: str) -> Task:
    """2.6.36-5.0: "Kill process ... score ... or sacrifice child": the child with its own
    mm and the strictly highest badness (first on ties) dies instead of the parent."""
    prof = m.profile
    m.emit("sim:oom_sacrifice", victim.pid, message, victim.comm,
           prof.oom_score(oc.chosen_points, oc.totalpages))
    best, best_points = victim, 0
    for child in m.processes():
        if child.parent is None or child.parent.signal is not victim.signal:
            continue
        if child.mm is None or child.mm is victim.mm:
            continue
        points = prof.badness(oom_task_view(m, child), oc.totalpages, m.now, m.hz)
        if points > best_points:
            best, best_points = child, points
    return best


async def oom_kill_process(m: "Machine", oc: OomControl, message: str, cur: Task) -> None:
    victim = oc.chosen
    # already exiting: no report, no kill, just reserves and the reaper
    if m.fixes.get("task_will_free_mem", True) and task_will_free_mem(m, victim):
        mark_oom_victim(m, victim)
        wake_oom_reaper(m, victim)
        return
    if __ratelimit(m, cur):
        await dump_header(m, oc, cur)
    if m.profile.sacrifice_child:
        victim = oom_sacrifice_child(m, oc, victim, message)
    # the memcg to clean up with the victim (memory.oom.group), looked up before the kill
    oom_group = oc.kill_group or mem_cgroup_get_oom_group(m, victim, oc.memcg)
    __oom_kill_process(m, victim, message, oc, cur)
    if oom_group is not None:
        # kill the whole group; the chosen victim is met (and counted) again.  A policy's
        # whole-cgroup kill is not memory.oom.group: it leaves memory.events alone
        if oc.kill_group is None and m.profile.oom_group_kill_event:
            memcg_memory_event(m, oom_group, "oom_group_kill", cur.pid)
        m.emit("sim:memcg_oom_group", cur.pid, oom_group.path)
        for p in mem_cgroup_scan_tasks(m, oom_group):
            if p.signal.oom_score_adj != OOM_SCORE_ADJ_MIN and not p.is_global_init:
                __oom_kill_process(m, p, message, oc, cur)


async def check_panic_on_oom(m: "Machine", oc: OomControl, cur: Task) -> None:
    if not m.panic_on_oom:
        return
    if m.panic_on_oom != 2 and oc.constraint != CONSTRAINT_NONE:
        return  # 1 panics only for system-wide OOMs
    if is_sysrq_oom(oc):
        return
    await dump_header(m, oc, cur)
    m.panic("Out of memory: %s panic_on_oom is enabled" %
            ("compulsory" if m.panic_on_oom == 2 else "system-wide"), cur)


async def out_of_memory(m: "Machine", cur: Task, oc: OomControl) -> bool:
    """Kill the "best" process when we run out of memory.  True means progress."""
    m.vmstat["oom_invocations"] += 1
    m.emit("sim:out_of_memory_enter", cur.pid, G.format_gfp(oc.gfp_mask), oc.order)
    result, reason = await _out_of_memory(m, cur, oc)
    if reason == "selected":
        await m.sched.point(cur, "oom.select")
        result, reason = await _oom_finish(m, cur, oc)
    m.emit("sim:out_of_memory_return", cur.pid, int(result), reason)
    return result


async def _out_of_memory(m: "Machine", cur: Task, oc: OomControl) -> tuple[bool, str]:
    if m.oom_killer_disabled:
        return False, "oom_killer_disabled"
    if m.profile.oom_checklist_24 and not is_memcg_oom(oc):
        # 2.4 does not trust one failure: swap left, 5 s windows, 10 failures, recent kill
        not_oom = out_of_memory_checklist(m)
        if not_oom is not None:
            return True, f"checklist_24:{not_oom}"
    if not is_memcg_oom(oc):
        freed = 0
        for notifier in m.oom_notifiers:
            freed += notifier(m)
        if freed > 0:
            return True, "notifier_freed"  # got some memory back in the last second
    # current is dying anyway: let it use the reserves to exit quickly
    if m.fixes.get("task_will_free_mem", True) and task_will_free_mem(m, cur):
        mark_oom_victim(m, cur)
        wake_oom_reaper(m, cur)
        return True, "current_exiting"
    # no compensation for IO-less reclaim: NOFS/NOIO callers loop instead of killing
    if oc.gfp_mask and not oc.gfp_mask & G.__GFP_FS and not is_memcg_oom(oc):
        return True, "no_fs"
    oc.constraint = constrained_alloc(m, oc, cur)
    if oc.constraint != CONSTRAINT_MEMORY_POLICY:
        oc.nodemask = None
    await check_panic_on_oom(m, oc, cur)
    if (not is_memcg_oom(oc) and m.oom_kill_allocating_task and cur.mm is not None
            and not oom_unkillable_task(cur) and oom_cpuset_eligible(m, cur, oc, cur)
            and cur.signal.oom_score_adj != OOM_SCORE_ADJ_MIN):
        oc.chosen = cur
        m.emit("sim:oom_victim_chosen", cur.pid, cur.comm, oom_badness(oom_task_view(m, cur), oc.totalpages),
               oc.totalpages)
        await oom_kill_process(m, oc, "Out of memory (oom_kill_allocating_task)", cur)
        return True, "killed_allocating_task"
    select_bad_process(m, oc, cur)
    # the walk over every process (a memcg OOM: the memcg's) costs CPU time, oom_lock held
    walked = mem_cgroup_scan_tasks(m, oc.memcg) if is_memcg_oom(oc) else m.processes()
    scan_ns = len(walked) * params.OOM_SCAN_NS_PER_TASK
    m.vmstat["oom_scan_ns"] += scan_ns
    await m.sched.run(cur, scan_ns, "oom.scan")
    return False, "selected"


async def _oom_finish(m: "Machine", cur: Task, oc: OomControl) -> tuple[bool, str]:
    if oc.chosen is None:
        await dump_header(m, oc, cur)
        m.emit("sim:no_killable", cur.pid)
        # a real allocation at the system level cannot survive this
        if not is_sysrq_oom(oc) and not is_memcg_oom(oc):
            m.panic("System is deadlocked on memory", cur)
        return False, "no_killable"
    if oc.chosen is ABORT:
        return True, "victim_pending"
    victim = oc.chosen
    m.emit("sim:oom_victim_chosen", victim.pid, victim.comm, oc.chosen_points, oc.totalpages)
    await oom_kill_process(m, oc, "Memory cgroup out of memory" if is_memcg_oom(oc) else "Out of memory", cur)
    return True, "killed"


async def pagefault_out_of_memory(m: "Machine", cur: Task) -> None:
    """<=5.15: a VM_FAULT_OOM that reached the fault handler triggers a global OOM (gfp 0).
    5.16+ only lets the fault be retried (the task re-faults until it is killed).  2.4's
    do_page_fault killed the faulting process itself ("VM: killing process"), except init."""
    mode = m.profile.pagefault_oom
    if mode == "none":
        return
    if mode == "kill_current":
        if not cur.is_global_init:
            m.emit("sim:vm_killing", cur.pid, cur.comm)
            do_send_sig_info(m, SIGKILL, cur, cur)
        return
    if not m.oom_lock_trylock(cur, quiet=True):
        return
    try:
        await out_of_memory(m, cur, OomControl([], None, None, 0, 0))
    finally:
        m.oom_lock_unlock(cur)
