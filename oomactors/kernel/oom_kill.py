"""The OOM killer (mm/oom_kill.c, Linux 5.10): choose a victim, kill it, let the reaper
take its memory.

Branches are in the kernel's order, each with the reason it exists.  Victim selection
itself (``select_bad_process``) runs through the machine's kill policy; the default
policy, ``policies.linux``, is exactly the kernel's loop below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import gfp as G
from . import params
from .memcontrol import mem_cgroup_scan_tasks
from .oom_kill_24 import out_of_memory_checklist
# what the OOM killer is made of, re-exported: `from .oom_kill import ...` keeps working
from .oom_select import (ABORT, CONSTRAINT_CPUSET, CONSTRAINT_MEMCG, CONSTRAINT_MEMORY_POLICY, CONSTRAINT_NAMES,
                         CONSTRAINT_NONE, LONG_MAX, LONG_MIN, OomControl, constrained_alloc, find_lock_task_mm,
                         is_memcg_oom, is_sysrq_oom, oom_badness, oom_context, oom_cpuset_eligible,
                         oom_evaluate_task, oom_task_view, oom_unkillable_task, pending_victim, select_bad_process,
                         select_bad_process_in)
from .oom_victim import (SIGKILL, __oom_kill_process, __task_will_free_mem, do_send_sig_info, dump_header,
                         dump_tasks, exit_oom_victim, mark_oom_victim, oom_kill_process, oom_sacrifice_child,
                         process_shares_mm, task_will_free_mem, wake_oom_reaper)
from .task import OOM_SCORE_ADJ_MIN, Task

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine

__all__ = ["ABORT", "CONSTRAINT_CPUSET", "CONSTRAINT_MEMCG", "CONSTRAINT_MEMORY_POLICY", "CONSTRAINT_NAMES",
           "CONSTRAINT_NONE", "LONG_MAX", "LONG_MIN", "SIGKILL", "OomControl", "check_panic_on_oom",
           "constrained_alloc", "do_send_sig_info", "dump_header", "dump_tasks", "exit_oom_victim",
           "find_lock_task_mm", "is_memcg_oom", "is_sysrq_oom", "mark_oom_victim", "oom_badness", "oom_context",
           "oom_cpuset_eligible", "oom_evaluate_task", "oom_kill_process", "oom_sacrifice_child", "oom_task_view",
           "oom_unkillable_task", "out_of_memory", "pagefault_out_of_memory", "pending_victim",
           "process_shares_mm", "select_bad_process", "select_bad_process_in", "task_will_free_mem",
           "wake_oom_reaper", "__oom_kill_process", "__task_will_free_mem"]


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
