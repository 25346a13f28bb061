"""The OOM killer's victim (mm/oom_kill.c, Linux 5.10): a task that will free its memory
by itself, the report (dump_header), the kill of the victim and of every process sharing
its mm, memory.oom.group, and handing the victim to the oom_reaper.

Branches are in the kernel's order, each with the reason it exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import gfp as G
from . import params
from .cpuset import cpuset_name
from .memcontrol_tree import (mem_cgroup_get_oom_group, mem_cgroup_print_oom_meminfo, mem_cgroup_scan_tasks,
                              memcg_memory_event, memcg_memory_event_mm, task_memcg_path)
from .oom_kill_24 import oom_kill_task_24
from .oom_select import (CONSTRAINT_NAMES, OomControl, find_lock_task_mm, is_memcg_oom, oom_cpuset_eligible,
                         oom_task_view, oom_unkillable_task)
from .ratelimit import ___ratelimit
from .show_mem import memory_stat, show_mem
from .task import MMF_OOM_REAP_QUEUED, MMF_OOM_SKIP, MMF_OOM_VICTIM, OOM_SCORE_ADJ_MIN, PF_EXITING, Task

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .task import MM

SIGKILL = 9


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
    memcg_oom = is_memcg_oom(oc)
    rows = []
    for p in mem_cgroup_scan_tasks(m, oc.memcg) if memcg_oom else m.processes():
        if oom_unkillable_task(p):
            continue
        if not memcg_oom and not oom_cpuset_eligible(m, p, oc, cur):
            continue
        t = find_lock_task_mm(p)
        if t is None:
            continue
        mm = t.mm
        anon, file, shmem = mm.rss_anon, mm.rss_file, mm.rss_shmem  # get_mm_rss is their sum
        rows.append([t.pid, t.uid, t.tgid, mm.total_vm, anon + file + shmem, mm.pgtables_bytes(),
                     mm.swapents, t.signal.oom_score_adj, t.comm, anon, file, shmem, t.last_cpu])
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
        if p.signal is victim.signal or not process_shares_mm(p, mm):
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
