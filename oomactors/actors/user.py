"""User tasks: a thin loop that runs a config program through kernel entry points.

A task executes only while dispatched on a CPU.  After every kernel entry it "returns to
user space", where a pending SIGKILL makes it exit; an interruptible sleep is cut short
by the signal.  Anonymous and file-backed memory is faulted in chunk by chunk under the
mmap_lock (read), the way page faults do.  The page-cache and working-set steps are in
:mod:`oomactors.actors.user_files`, the way back to user space in
:mod:`oomactors.actors.user_return`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import (AccessStep, AllocStep, BlockStep, ComputeStep, ExitStep, ForkStep, FreeStep, RepeatStep,
                      SetOomScoreAdjStep, SleepStep, TouchFileStep, WriteStep)
from ..kernel import gfp as G
from ..kernel import params
from ..kernel.exit import do_exit, mmap_write_lock
from ..errors import InputError
from ..kernel.fork import dup_mm, dup_task_kmem, fork_limit, free_task_kmem, task_counted
from ..kernel.memcontrol import mem_cgroup_handle_over_high, uncharge_swap
from ..kernel.mmap import mmap_region, munmap_unaccount
from ..kernel.cow import copy_present_ptes, wp_page_copy
from ..kernel.cpuset import cpuset_fork
from ..kernel.oom_reaper import check_stable_address_space, release_anon
from ..kernel.task import MM, MMF_UNSTABLE, PAGE_SIZE, Signal, Task
from ..kernel.workingset import drop_shadows
from ..units import to_jiffies
from .fault import FAST_FAILED, fault_chunks_nowait, fault_pages, fault_pages_nowait
# the page-cache and working-set steps, and the way back to user space, live in modules of
# their own; their names stay importable from here
from .user_files import _access, _access_new, _fault_back, _touch_file, page_cache_alloc  # noqa: F401
from .user_return import (EACCES, EAGAIN, ENOMEM, _enomem, _Exit, _pace, ret_to_user,  # noqa: F401
                          to_jiffies_pages, vm_fault_oom)

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine


def _boot_pid(m: "Machine") -> int:
    pid = m.alloc_pid()
    if not pid:
        raise InputError(f"more tasks at boot than pids below kernel.pid_max ({m.pid_max})")
    return pid


def new_process(m: "Machine", comm: str, uid: int, caps: frozenset[str], adj: int, *,
                mm: MM | None = None, nice: int = 0, kthread: bool = False, pid: int = 0) -> Task:
    pid = pid or _boot_pid(m)
    if mm is None and not kthread:
        mm = MM(len(m.zones))
        m.mms.add(mm)
    sig = Signal(adj)
    task = Task(pid, pid, comm, uid, caps, sig, mm, kthread=kthread, nice=nice, start_time=m.now)
    task.last_cpu = pid % len(m.sched.cpus)
    m.tasks[pid] = task
    task_counted(m, task)
    m.proc_list.append(task)
    m.emit("sim:task_new", pid, pid, task.comm, uid, adj, int(kthread))
    return task


def new_thread(m: "Machine", leader: Task) -> Task:
    pid = _boot_pid(m)
    t = Task(pid, leader.tgid, leader.comm, leader.uid, leader.caps, leader.signal, leader.mm,
             nice=leader.nice, start_time=m.now)
    t.last_cpu = pid % len(m.sched.cpus)
    m.tasks[pid] = t
    task_counted(m, t)
    m.emit("sim:task_new", pid, leader.tgid, t.comm, t.uid, t.signal.oom_score_adj, 0)
    cpuset_fork(m, leader, t)
    return t


async def user_task(m: "Machine", task: Task, program: tuple, start_delay: int = 0) -> None:
    """The actor of one user thread."""
    if start_delay:
        await m.sched.clock.sleep_until(m.now + start_delay)
    await m.sched.get_cpu(task)
    reason = "exit"
    try:
        ret_to_user(task)
        await run_steps(m, task, program)
    except _Exit as e:
        reason = e.reason
    if reason == "sigterm":
        reason = await sigterm_handler(m, task)
    await do_exit(m, task, reason)


async def sigterm_handler(m: "Machine", task: Task) -> str:
    """The program's SIGTERM handler: clean up for the group's ``sigterm_exit_delay``
    (SIGTERM blocked meanwhile; SIGKILL still ends it), then exit(), taking the other
    threads along.  Returns the exit reason: "sigterm", or "killed"."""
    task.sigterm = False
    sigs = task.signal
    sigs.in_sigterm_handler = True
    end = m.now + sigs.sigterm_delay
    try:
        while m.now < end and not task.sigkill:
            await m.sched.sleep(task, end - m.now, "task.sigterm", interruptible=True)
    finally:
        sigs.in_sigterm_handler = False
    if task.sigkill:
        return "killed"
    for t in sigs.live_threads():
        if t is not task:
            t.sigkill = True
            m.sched.signal_wake(t)
    return "sigterm"


async def run_steps(m: "Machine", task: Task, steps: tuple, times: int | None = 1, round_ns: int = 0) -> None:
    """Run ``steps`` ``times`` times (None: forever), ``round_ns`` of CPU after each pass
    (a repeat step's): a repeat step is one coroutine for all its passes, and the sleep
    and compute steps run here with their jiffies and nanoseconds worked out once per
    program (:func:`_ops`)."""
    sched = m.sched
    ops = _ops(m, steps)
    n = 0
    while times is None or n < times:
        n += 1
        for kind, arg in ops:
            # the two commonest steps run here rather than in a coroutine of their own
            if kind is SleepStep:
                await sched.sleep(task, arg, "task.sleep", interruptible=True)
            elif kind is ComputeStep:
                if not sched.run_nowait(task, arg):
                    await sched.run(task, arg, "task.compute")
            else:
                await STEP[kind](m, task, arg)
            if task.sigkill or task.sigterm:  # ret_to_user's test first: a call per step saved
                ret_to_user(task)
        if round_ns:
            # a loop of steps that never sleep must still let time pass
            if not sched.run_nowait(task, round_ns):
                await sched.run(task, round_ns, "task.compute")


def _ops(m: "Machine", steps: tuple) -> tuple:
    """``steps`` as (kind, argument) pairs, made once per program and machine: a sleep's
    jiffies, a compute step's nanoseconds, else the step itself."""
    cache = m.sched.programs
    got = cache.get(id(steps))
    if got is not None and got[0] is steps:
        return got[1]
    ops = tuple((SleepStep, to_jiffies(s.time, m.hz)) if type(s) is SleepStep
                else (ComputeStep, _compute_ns(m, s)) if type(s) is ComputeStep
                else (type(s), s) for s in steps)
    cache[id(steps)] = (steps, ops)  # the steps kept alive: their id stays theirs
    return ops


async def _repeat(m: "Machine", task: Task, step: RepeatStep) -> None:
    await run_steps(m, task, step.steps, step.times, params.SLOWPATH_ROUND_NS)


async def _alloc(m: "Machine", task: Task, step: AllocStep) -> None:
    mm = task.mm
    pages = step.size // PAGE_SIZE
    order = step.order
    kind = step.kind
    m.emit("sim:step", task.pid, "alloc", pages)
    gfp_mask = step.gfp_mask
    if kind != "kernel":
        # mmap first (commit check, then total_vm grows), fault in after
        while mmap_region(m, task, mm, pages, kind):
            if await _enomem(m, task, "alloc", step.on_fail):
                return
    # order-0 pages come in chunks (fault-around, alloc_pages_bulk); there is no bulk
    # request above order 0, so each high-order block is an allocation of its own, with
    # its own watermark check and compaction (the watermark only asks for one block)
    chunk_blocks = step.chunk if order == 0 else 1
    done = 0
    sched = m.sched
    clock = sched.clock
    start = clock.now
    is_fault = kind in ("anon", "shmem")
    rate = step.rate
    while done < pages:
        made = 0
        if not order and pages - done >= chunk_blocks:
            # faults that no scheduling point separates, in one pass
            made = fault_chunks_nowait(m, task, mm, chunk_blocks, kind, gfp_mask,
                                       (pages - done) // chunk_blocks, start, done, rate)
            if made > 0:
                done += made * chunk_blocks
                mm.last_active = clock.now
                if rate and start + to_jiffies_pages(m, done, rate) > clock.now:
                    await _pace(m, task, start, done, rate)  # the last was ahead of the rate
                    continue
                if done == pages:
                    break
        nr = min(chunk_blocks, -(-(pages - done) >> order))
        # made < 0: the next fault's first attempt fails (fault_chunks_nowait saw it)
        zone = FAST_FAILED if made < 0 else fault_pages_nowait(m, task, mm, nr, order, kind, gfp_mask)
        if zone is None or zone is FAST_FAILED:
            zone, got = await fault_pages(m, task, mm, nr, order, kind, gfp_mask,
                                          fast_failed=zone is FAST_FAILED)
        else:
            got = nr << order
        if (zone is not None and mm is not None and mm.flags & MMF_UNSTABLE and kind == "anon"
                and check_stable_address_space(m, task, mm, zone, got)):
            raise _Exit("killed" if task.sigkill else "sigbus")  # do_anonymous_page: VM_FAULT_SIGBUS
        if zone is None:
            if is_fault:
                # VM_FAULT_OOM: the fault handler's OOM path, then back to user space to retry
                await vm_fault_oom(m, task)
                continue
            if await _enomem(m, task, "alloc", step.on_fail):
                return
            continue
        done += got
        mm.last_active = clock.now if mm is not None else 0
        if not sched.run_nowait(task, got * params.FAULT_NS_PER_PAGE):
            await sched.run(task, got * params.FAULT_NS_PER_PAGE, "fault.cpu")
        ret_to_user(task)
        if task.memcg_nr_pages_over_high:
            await mem_cgroup_handle_over_high(m, task)  # set_notify_resume work
            ret_to_user(task)
        if rate and start + to_jiffies_pages(m, done, rate) > clock.now:  # _pace's test, inline
            await _pace(m, task, start, done, rate)


async def _write(m: "Machine", task: Task, step: WriteStep) -> None:
    """Write to anonymous memory.  A write fault on a page still shared copy-on-write
    (do_wp_page -> wp_page_copy) allocates a private copy; pages already private cost
    nothing here.  The copies come chunk by chunk like any fault."""
    mm = task.mm
    pages = step.size // PAGE_SIZE
    m.emit("sim:step", task.pid, "write", pages)
    while pages > 0 and (shared := mm.rss_anon - sum(mm.anon)) > 0:
        nr = min(step.chunk, pages, shared)
        zone, nr = await fault_pages(m, task, mm, nr, 0, "anon", G.GFP_HIGHUSER_MOVABLE)
        if zone is None:
            await vm_fault_oom(m, task)
            continue
        # the copies replace shared pages (the zone of the old page does not matter)
        left = nr
        for g in range(len(mm.cow)):
            left -= wp_page_copy(mm, g, left)
        pages -= nr
        mm.last_active = m.now
        await m.sched.run(task, nr * params.FAULT_NS_PER_PAGE, "fault.cpu")
        ret_to_user(task)
        if task.memcg_nr_pages_over_high:
            await mem_cgroup_handle_over_high(m, task)  # set_notify_resume work
            ret_to_user(task)


async def _free(m: "Machine", task: Task, step: FreeStep) -> None:
    """munmap of anonymous memory: resident pages first, then swapped-out ones."""
    mm = task.mm
    want = mm.rss_anon + mm.swapents if step.size == "all" else step.size // PAGE_SIZE
    m.emit("sim:step", task.pid, "free", want)
    left = want
    for zone in m.zones:
        k = min(mm.anon[zone.gid], left)
        if k:
            release_anon(m, task, mm, zone, k)
            left -= k
    for g in range(len(mm.cow)):
        k = min(mm.cow_pages(g), left)  # shared with the parent: only this mapping goes
        mm.cow[g] -= k
        left -= k
    k = min(mm.swapents, left)
    mm.swapents -= k
    drop_shadows(m, mm, k)  # the swap cache's shadows go with the entries
    m.swap_free += k
    uncharge_swap(mm, k)
    left -= k
    mm.total_vm = max(0, mm.total_vm - want)
    munmap_unaccount(m, mm, None if step.size == "all" else want)
    # page tables no longer needed
    extra = sum(mm.pgtables) - mm.pgtables_needed()
    for zone in m.zones:
        g = zone.gid
        k = min(mm.pgtables[g], extra)
        if k > 0:
            mm.pgtables[g] -= k
            zone.nr["pagetables"] -= k
            m.free_to_buddy(task, zone, k)
            extra -= k
    await m.sched.run(task, (want - left) * params.ZAP_NS_PER_PAGE, "exit.zap")


async def _copy_process(m: "Machine", task: Task, clone_vm: bool) -> tuple[int, Any]:
    """copy_process's steps that can fail, in its order (kernel/fork.py): the task_struct
    and stack (-ENOMEM), RLIMIT_NPROC and threads-max (-EAGAIN), a pid (-EAGAIN), the mm
    (-ENOMEM).  Returns (0, (pid, mm, kmem)) or (-errno, None); a failure gives back what
    the earlier steps took.  (The kernel copies the mm before it takes a pid; taking the
    pid first only changes which error wins when both would fail.)"""
    await m.sched.run(task, params.FORK_NS, "fork.copy_process")
    kmem = await dup_task_kmem(m, task, clone_vm)
    if kmem is None:
        return -ENOMEM, None
    err = fork_limit(m, task)
    pid = 0 if err else m.alloc_pid()
    if not pid:
        free_task_kmem(m, task, kmem)
        return err or -EAGAIN, None
    # copy_mm -> dup_mm: the parent's accounted mappings are charged again (kernel/fork.py)
    mm = task.mm if clone_vm else dup_mm(m, task)
    if mm is None:
        m.pids_in_use.discard(pid)
        m.nr_threads -= 1
        free_task_kmem(m, task, kmem)
        return -ENOMEM, None
    if not clone_vm:
        copy_present_ptes(task.mm, mm)  # dup_mmap: the VMAs, and the anon pages copy-on-write
    return 0, (pid, mm, kmem)


async def _fork(m: "Machine", task: Task, step: ForkStep) -> None:
    comm = step.comm or task.comm
    while True:
        err, got = await _copy_process(m, task, step.clone_vm)
        if not err:
            break
        if await _enomem(m, task, "fork", step.on_fail, -err):
            return
    pid, mm, kmem = got
    child = new_process(m, comm, task.uid, task.caps, task.signal.oom_score_adj, mm=mm, nice=task.nice,
                        pid=pid)
    child.kmem = kmem
    child.group = task.group
    child.parent = task
    # copy_signal: the child inherits the adj and its floor
    child.signal.oom_score_adj_min = task.signal.oom_score_adj_min
    # signal dispositions survive fork
    sigs, csigs = task.signal, child.signal
    csigs.sigterm_action, csigs.sigterm_delay = sigs.sigterm_action, sigs.sigterm_delay
    cpuset_fork(m, task, child)
    child.memcg = task.memcg  # a child starts in its parent's cgroups
    if not step.clone_vm:
        child.mm.memcg = task.memcg
    m.user_procs_alive += 1
    m.emit("sched:sched_process_fork", task.pid, task.comm, child.pid, child.comm)
    m.spawn(user_task, m, child, step.program)


async def _exit(m: "Machine", task: Task, step: ExitStep) -> None:
    raise _Exit("exit")


async def _sleep(m: "Machine", task: Task, step: SleepStep) -> None:
    await m.sched.sleep(task, to_jiffies(step.time, m.hz), "task.sleep", interruptible=True)


def _compute_ns(m: "Machine", step: ComputeStep) -> int:
    return step.time.ns if step.time.jiffies is None else step.time.jiffies * m.sched.clock.jiffy_ns


async def _compute(m: "Machine", task: Task, step: ComputeStep) -> None:
    await m.sched.run(task, _compute_ns(m, step), "task.compute")


async def _block(m: "Machine", task: Task, step: BlockStep) -> None:
    """An uninterruptible sleep (D state), optionally inside mmap_lock held for write."""
    mm = task.mm
    jiffies = to_jiffies(step.time, m.hz)
    if step.hold_mmap_lock and mm is not None:
        await mmap_write_lock(m, task, mm, "task.mmap_lock")
        m.emit("sim:mmap_lock", task.pid, "hold_write")
        try:
            await m.sched.sleep(task, jiffies, "task.block")
        finally:
            mm.mmap_lock.write_unlock()
            m.emit("sim:mmap_lock", task.pid, "release_write")
    else:
        await m.sched.sleep(task, jiffies, "task.block")


async def _set_adj(m: "Machine", task: Task, step: SetOomScoreAdjStep) -> None:
    """A write to its own /proc/PID/oom_score_adj (fs/proc/base.c __set_oom_adj): shared by
    the thread group and by processes sharing the mm.  Without CAP_SYS_RESOURCE a task may
    not go below its floor (EACCES); a privileged write moves the floor along with it."""
    sigs = task.signal
    privileged = "CAP_SYS_RESOURCE" in task.caps  # capable(): the writer is the task itself
    # 2.6.36 compared with the current value; oom_score_adj_min (3.2+) remembers the lowest
    # value a privileged writer granted, so an unprivileged task can go back down to it
    floor = sigs.oom_score_adj if m.profile.adj_floor == "current" else sigs.oom_score_adj_min
    if step.value < floor and not privileged:
        m.emit("sim:step_failed", task.pid, "set_oom_score_adj", EACCES)
        return
    targets = [task]
    if task.mm is not None and task.mm.users > 1:
        targets += [p for p in m.processes() if p.signal is not sigs
                    and any(t.mm is task.mm for t in p.signal.threads)
                    and not p.is_kthread and not p.is_global_init]
    for p in targets:
        p.signal.oom_score_adj = step.value
        if privileged:
            p.signal.oom_score_adj_min = step.value
        m.emit("oom:oom_score_adj_update", p.pid, p.comm, step.value)


STEP: dict[type, Any] = {
    AllocStep: _alloc, TouchFileStep: _touch_file, AccessStep: _access, FreeStep: _free, ForkStep: _fork,
    ExitStep: _exit, SleepStep: _sleep, ComputeStep: _compute, BlockStep: _block,
    SetOomScoreAdjStep: _set_adj, RepeatStep: _repeat, WriteStep: _write,
}
