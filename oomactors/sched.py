"""CPUs and the named scheduling points, on the virtual clock of :mod:`oomactors.clock`.

A task runs kernel code only while it holds a CPU.  Sleeping or blocking gives the CPU
back; the CPU actor dispatches its run queue round-robin, and a task whose time slice
is used up yields at its next scheduling point when someone else is waiting.

Every place the model can sleep or be preempted inside the OOM paths is a *named
scheduling point* (:data:`POINTS`).  That list is the surface that race exploration
controls, and the README documents it.

Each pass through a named point is also a *decision point* for an installed scheduler
(:mod:`oomactors.schedule`): it may hold the actor back (a yield, or k jiffies off the
CPU) before the point does its own work.  Without a scheduler nothing is asked.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from . import interrupt as _interrupt
from .clock import NSEC_PER_SEC, Clock, Waiter, _Backend, _Call  # noqa: F401 - re-exported
from .errors import OomactorsError
from .events import EVENT_ID
from .stepper import PARK, SWITCH

if TYPE_CHECKING:  # pragma: no cover
    from .kernel.task import Task

# name -> where the kernel can sleep or be preempted there
POINTS: dict[str, str] = {
    "alloc.cond_resched": "cond_resched() in the slow path after a failed round (should_reclaim_retry)",
    "alloc.nofail_retry": "cond_resched() before a __GFP_NOFAIL request loops again",
    "reclaim.begin": "cond_resched() at the top of __perform_reclaim",
    "reclaim.io_wait": "waiting for swap-out or writeback IO issued by reclaim",
    "reclaim.throttle": "throttle_direct_reclaim: waiting on pfmemalloc_wait for kswapd",
    "reclaim.congestion_wait": "congestion_wait(HZ/10) in should_reclaim_retry while dirty pages dominate",
    "reclaim.scan": "CPU time spent scanning LRU lists",
    "compact.scan": "CPU time spent in direct compaction",
    "may_oom.trylock_failed": "schedule_timeout_uninterruptible(1) after losing the oom_lock trylock",
    "may_oom.locked": "preemption with oom_lock held, before the last HIGH-watermark attempt",
    "oom.scan": "CPU time select_bad_process spends walking every process, oom_lock held",
    "oom.select": "preemption inside out_of_memory after a victim was selected",
    "oom.report": "CPU time printing the OOM report to the console (dump_header), oom_lock held",
    "fault.retry": "return to user space after VM_FAULT_OOM, before the fault is retried",
    "fault.cpu": "CPU time spent faulting pages in",
    "fault.io_wait": "a fault waiting for its swap-in or page-cache read (a memory stall when thrashing)",
    "exit.zap": "CPU time spent unmapping the address space in exit_mmap",
    "exit.mmap_lock": "exit_mm waiting for mmap_lock",
    "exit.tlb_finish_mmu": "6.0+ exit_mmap after MMF_OOM_SKIP, before tlb_finish_mmu frees the gathered pages",
    "reaper.zap": "CPU time the oom_reaper spends unmapping a victim's memory",
    "reaper.retry_sleep": "schedule_timeout_idle(HZ/10) between the oom_reaper's trylock attempts",
    "reaper.wait": "the oom_reaper waiting for a queued victim",
    "kswapd.nap": "kswapd's HZ/10 nap before full sleep",
    "kswapd.sleep": "kswapd sleeping until woken",
    "kswapd.scan": "CPU time kswapd spends reclaiming",
    "task.sleep": "a program's interruptible sleep",
    "task.block": "a program's uninterruptible block (optionally holding mmap_lock)",
    "task.compute": "a program's CPU burst",
    "task.access": "CPU time a program spends touching its resident working set again",
    "task.mmap_lock": "a program waiting for mmap_lock",
    "task.rate": "a program pacing its allocation rate",
    "fork.copy_process": "CPU time fork spends copying the task and its mm (copy_process)",
    "task.enomem_retry": "a program pausing after mmap or fork failed with -ENOMEM, before retrying",
    "task.sigterm": "a program's SIGTERM handler cleaning up before it exits (sigterm_exit_delay)",
    "userspace.poll": "a userspace OOM killer sleeping between two polls",
    "userspace.cpu": "CPU time a userspace OOM killer spends reading /proc and cgroup files and deciding",
    "cpu.vmstat": "the per-CPU vmstat_update timer",
    "memcg.oom_lock": "mem_cgroup_out_of_memory waiting for oom_lock (mutex_lock_killable)",
    "memcg.high_throttle": "mem_cgroup_handle_over_high: the penalty sleep above memory.high (at most 2 s)",
    "cpuset.update": "cpuset_change_task_nodemask between mems = old|new and mems = new (seqcount odd)",
}

# The points that are not simply a decision point at every pass (every other point asks an
# installed scheduler each time it is passed; one that stands for CPU time, once per jiffy
# of it).  docs/reference/points.md shows this; tests/test_decision_points.py checks it
# against what runs ask.
DECISION_EXCEPTIONS: dict[str, str] = {
    "cpu.vmstat": "never: a per-CPU timer with no task to hold (counted as a point only)",
    "kswapd.nap": "every pass, with no preemption of its own: only a scheduler holds kswapd there",
}


_SWITCH_ID = EVENT_ID["sched:sched_switch"]

# Ctrl-C is also polled every this-many-plus-one decision points, for a stretch of
# simulated work in which neither time advances nor an event is emitted
_POLL_MASK = 4095


class CPU:
    """One CPU: the task it runs, its run queue and its per-CPU memory state."""

    def __init__(self, cid: int, nzones: int, sched: "Sched") -> None:
        self.id = cid
        self.bit = 1 << cid               # its bit in Sched.idle_mask
        self.idle_comm = f"swapper/{cid}"  # its idle task's name
        self.curr: Task | None = None
        self.prev: Task | None = None  # left the CPU, its successor not yet switched in
        self.rq: deque[tuple[Task, Waiter]] = deque()
        self.slice_end = 0
        self.sched = sched
        self.pcp = [0] * nzones        # per-CPU free page lists, by zone
        self.vm_diff = [0] * nzones    # per-CPU NR_FREE_PAGES drift, by zone
        self.kick = Waiter(sched.clock)
        self.kick.woken = True

    def __repr__(self) -> str:
        return f"<CPU {self.id}>"

    def wake_actor(self) -> None:
        self.kick.wake()

    async def actor(self) -> None:
        """Dispatch the run queue whenever the CPU is free."""
        sched = self.sched
        while True:
            if self.curr is None and self.rq:
                task, w = self.rq.popleft()
                sched.switch_to(self, task)
                w.wake()
                continue
            self.kick = Waiter(sched.clock)
            await self.kick.wait()


class Sched:
    """Ties clock and CPUs together; every blocking call of the model goes through here."""

    def __init__(self, hz: int, ncpus: int, nzones: int, time_slice: int, backend: str,
                 emit: Callable[..., None], seed: int = 0,
                 emit_switch: Callable[[int, int, int, str], None] | None = None) -> None:
        self.backend = _Backend(backend, seed)
        self.stepper = self.backend.stepper
        self.clock = Clock(hz, self.backend)
        self.cpus = [CPU(i, nzones, self) for i in range(ncpus)]
        self.time_slice = max(1, time_slice)
        self.jiffy_ns = self.clock.jiffy_ns  # run_nowait's bound, one look-up less
        self.emit = emit
        # the sched_switch record, the commonest of a run: emit_switch(cpu, prev_pid,
        # next_pid, next_comm) is emit("sched:sched_switch", cpu, next_pid, prev_pid,
        # next_pid, next_comm) without its argument tuple (Machine.emit_switch)
        self.emit_switch: Callable[[int, int, int, str], None] = (
            emit_switch if emit_switch is not None
            else lambda cpu, prev, nxt, comm: emit("sched:sched_switch", cpu, nxt, prev, nxt, comm))
        # a sleep's two sched_switch records go straight to this sink, without the frame of
        # emit_switch, when it is the run's one sink and no checker reads them: set by
        # Machine.fast_switches at a run's start, None from the moment the machine halts
        # (Machine.halt_switches); emit_switch still takes them while Ctrl-C is pending.
        # ``switches`` counts them for Machine.nevents.
        self.switch_sink: Callable[[tuple], None] | None = None
        self.switches = 0
        self.point_hits: dict[str, int] = dict.fromkeys(POINTS, 0)
        self.current: Task | None = None   # the task whose code runs right now
        # CPUs with nothing to run, a bit per CPU (the lowest idle CPU is its lowest bit)
        self.idle_mask = (1 << ncpus) - 1
        self._cpu_masks: dict[frozenset[int], int] = {}  # cpus_allowed -> its bits
        # controlled scheduling (oomactors/schedule.py): None keeps the plain model
        self.scheduler: Any = None
        self.decisions = 0                 # decision points passed (asked or not)
        self.choices: list[Any] = []       # its non-default answers, as schedule.Choice
        # the machine's PSI (oomactors/psi.py): told when a task becomes runnable, is
        # dispatched, is preempted or sleeps (psi_enqueue/psi_dequeue/psi_task_switch)
        self.psi: Any = None
        # id(program steps) -> (steps, their ops), made once per run (actors/user.py _ops)
        self.programs: dict[int, tuple[tuple, tuple]] = {}

    @property
    def now(self) -> int:
        return self.clock.now

    # --- CPU ownership -------------------------------------------------------------
    def switch_to(self, cpu: CPU, task: "Task") -> None:
        prev = cpu.curr or cpu.prev
        cpu.curr = task
        cpu.prev = None
        task.cpu = cpu
        task.last_cpu = cpu.id
        cpu.slice_end = self.clock.now + self.time_slice
        if self.psi is not None:
            self.psi.sched(task, cpu.id, True, True)
        self.idle_mask &= ~cpu.bit
        self.emit_switch(cpu.id, prev.pid if prev else 0, task.pid, task.comm)

    def _pick_cpu(self, task: "Task") -> CPU:
        """select_task_rq, simply: the previous CPU if idle, else the lowest idle CPU,
        else the previous CPU's run queue (there is no periodic load balancing).  A task
        of a cpuset with ``cpus`` only ever runs on those CPUs (cpus_allowed)."""
        last = self.cpus[task.last_cpu]
        allowed = task.cpus_allowed
        if allowed is not None and last.id not in allowed:
            last = self.cpus[min(allowed)]
        if last.curr is None and not last.rq:
            return last
        idle = self.idle_mask
        if allowed is not None:
            idle &= self._allowed_mask(allowed)
        return self.cpus[(idle & -idle).bit_length() - 1] if idle else last

    def _allowed_mask(self, allowed: frozenset[int]) -> int:
        mask = self._cpu_masks.get(allowed)
        if mask is None:
            mask = self._cpu_masks[allowed] = sum(1 << c for c in allowed)
        return mask

    def _set_idle(self, cpu: CPU) -> None:
        if cpu.curr is None and not cpu.rq:
            self.idle_mask |= cpu.bit
        else:
            self.idle_mask &= ~cpu.bit

    async def get_cpu(self, task: "Task") -> CPU:
        """Be dispatched: at once on an idle CPU, otherwise through its run queue."""
        cpu = self._pick_cpu(task)
        if cpu.curr is None and not cpu.rq:
            self.switch_to(cpu, task)
            self.current = task
        else:
            await self._wait_cpu(task, cpu)
        return cpu

    def put_cpu(self, task: "Task") -> None:
        cpu = task.cpu
        if cpu is None:
            return
        task.cpu = None
        cpu.curr = None
        if self.psi is not None:  # asleep; a preemption makes it runnable again (_wait_cpu)
            self.psi.sched(task, cpu.id, False, False)
        if cpu.rq:
            cpu.prev = task  # the dispatch's sched_switch names it as prev
            cpu.wake_actor()
        else:
            self.idle_mask |= cpu.bit
            # the switch to the idle task: without it a trace cannot tell when a task
            # stopped running (pid 0, "swapper/N", as the kernel names the idle task)
            self.emit_switch(cpu.id, task.pid, 0, cpu.idle_comm)

    # --- blocking primitives ---------------------------------------------------------
    async def point(self, task: "Task", name: str) -> None:
        """A named scheduling point where the task may be preempted."""
        self.point_hits[name] += 1
        self.decisions += 1
        if not self.decisions & _POLL_MASK and _interrupt._requested:
            self.clock.interrupt()
        if self.scheduler is not None:
            await self._decide(task, name)
        cpu = task.cpu
        if cpu is not None and cpu.rq and self.clock.now >= cpu.slice_end:
            self.put_cpu(task)
            await self._wait_cpu(task, cpu)

    async def _wait_cpu(self, task: "Task", cpu: CPU) -> None:
        """Queue on ``cpu`` (runnable, not running) and wait to be dispatched: after a
        wakeup that found the CPU busy, or after a preemption."""
        w = Waiter(self.clock)
        cpu.rq.append((task, w))
        self.idle_mask &= ~cpu.bit
        if self.psi is not None:
            self.psi.sched(task, cpu.id, True, False)
        await w.wait()
        self.current = task

    async def sleep(self, task: "Task", jiffies: int, name: str, *, interruptible: bool = False) -> bool:
        """Sleep off the CPU for ``jiffies``.  Returns True if a signal cut it short."""
        self.point_hits[name] += 1
        self.decisions += 1
        if not self.decisions & _POLL_MASK and _interrupt._requested:
            self.clock.interrupt()
        if self.scheduler is not None:
            await self._decide(task, name)
        if interruptible and task.sigkill:
            return True
        cpu = task.cpu
        if cpu is not None:
            if cpu.rq or self.psi is not None:
                self.put_cpu(task)
            else:  # put_cpu's commonest case without its frame: the CPU goes idle
                task.cpu = None
                cpu.curr = None
                self.idle_mask |= cpu.bit
                sink = self.switch_sink
                if sink is not None and not _interrupt._requested:
                    self.switches += 1
                    sink((self.clock.now, _SWITCH_ID, cpu.id, 0, task.pid, 0, cpu.idle_comm))
                else:
                    self.emit_switch(cpu.id, task.pid, 0, cpu.idle_comm)
        clock = self.clock
        w = task.sleeper
        if w is None:
            w = Waiter(clock)
        else:  # the clock woke it last time (see below): nothing else refers to it
            task.sleeper = None
            w.woken = False
        if interruptible:
            task.wake_on_signal = w
        # clock.sleep_until without its coroutine, Backend.park without its frame
        if clock.arm(clock.now + jiffies if jiffies > 0 else clock.now, w):
            w.task = self.stepper.current
            await PARK
        task.wake_on_signal = None
        if w.value == "signal":
            signalled = True  # still among the timers until its deadline: not reused
        else:
            # woken by the clock: out of the timers, unparked, its value None -- the next
            # sleep of this task takes it instead of making a new one
            signalled = False
            task.sleeper = w
        # get_cpu without the frames of _pick_cpu and switch_to, when no cpuset limits the
        # task and there is no PSI: its last CPU if free, else the lowest idle one
        cpu = self.cpus[task.last_cpu]
        if task.cpus_allowed is None and self.psi is None:
            if cpu.curr is not None or cpu.rq:
                idle = self.idle_mask
                if not idle:
                    await self._wait_cpu(task, cpu)
                    return signalled
                cpu = self.cpus[(idle & -idle).bit_length() - 1]
                if cpu.curr is not None or cpu.rq:  # pragma: no cover - idle_mask is exact
                    await self._wait_cpu(task, cpu)
                    return signalled
            prev = cpu.prev
            cpu.curr = task
            cpu.prev = None
            task.cpu = cpu
            task.last_cpu = cpu.id
            cpu.slice_end = clock.now + self.time_slice
            self.idle_mask &= ~cpu.bit
            sink = self.switch_sink
            pid = task.pid
            if sink is not None and not _interrupt._requested:
                self.switches += 1
                sink((clock.now, _SWITCH_ID, cpu.id, pid, prev.pid if prev else 0, pid, task.comm))
            else:
                self.emit_switch(cpu.id, prev.pid if prev else 0, pid, task.comm)
            self.current = task
            return signalled
        cpu = self._pick_cpu(task)
        if cpu.curr is None and not cpu.rq:
            self.switch_to(cpu, task)
            self.current = task
        else:
            await self._wait_cpu(task, cpu)
        return signalled

    async def block_on(self, task: "Task", w: Waiter, name: str) -> Any:
        """Sleep off the CPU until someone wakes ``w`` (a lock hand-over, a wakeup)."""
        self.point_hits[name] += 1
        self.decisions += 1
        if self.scheduler is not None:
            await self._decide(task, name)
        self.put_cpu(task)
        value = await w.wait()
        await self.get_cpu(task)
        return value

    def run_nowait(self, task: "Task", ns: int) -> bool:
        """What :meth:`run` does when ``ns`` fits in the jiffy already begun: charge it and
        return True, with no await (the hot paths call ``run`` only when this says False)."""
        debt = task.cpu_debt_ns + ns
        if debt < self.jiffy_ns:
            task.cpu_ns += ns
            task.cpu_debt_ns = debt
            return True
        return False

    async def run(self, task: "Task", ns: int, name: str) -> None:
        """Spend CPU time on the task's CPU; virtual time moves once a jiffy is used up."""
        task.cpu_ns += ns
        debt = task.cpu_debt_ns + ns
        jiffy = self.clock.jiffy_ns
        if debt < jiffy:
            task.cpu_debt_ns = debt
            return
        task.cpu_debt_ns = debt % jiffy
        jiffies = debt // jiffy
        self.point_hits[name] += 1
        self.decisions += 1
        if not self.decisions & _POLL_MASK and _interrupt._requested:
            self.clock.interrupt()
        if self.scheduler is not None:
            await self._decide(task, name)
        clock = self.clock
        while jiffies > 0:
            cpu = task.cpu
            step = max(1, min(jiffies, cpu.slice_end - clock.now)) if cpu.rq else jiffies
            # clock.sleep_until without its coroutine, Backend.park without its frame; only
            # the clock wakes w, so it is the task's to keep for its next sleep (see sleep)
            w = task.sleeper
            if w is None:
                w = Waiter(clock)
            else:
                task.sleeper = None
                w.woken = False
            if clock.arm(clock.now + step, w):
                w.task = self.stepper.current
                await PARK
            task.sleeper = w
            self.current = task
            jiffies -= step
            if cpu.rq and self.clock.now >= cpu.slice_end:
                self.put_cpu(task)
                await self._wait_cpu(task, cpu)

    # --- controlled scheduling --------------------------------------------------------
    async def decision(self, task: "Task", name: str) -> None:
        """A named point that is only a decision point (no preemption of its own)."""
        self.point_hits[name] += 1
        self.decisions += 1
        if self.scheduler is not None:
            await self._decide(task, name)

    async def _decide(self, task: "Task", name: str) -> None:
        """Ask the scheduler about this decision point; record and apply a departure."""
        index = self.decisions - 1
        scheduler = self.scheduler
        try:
            if scheduler.picks:
                offered = self.stepper.offered()
                action = scheduler.choose(index, task.pid, name, offered)
                if action <= -2 and -2 - action not in offered[1:]:
                    raise OomactorsError(f"{scheduler.name} scheduler: choice #{index} picks actor "
                                         f"{-2 - action}, not one of those offered {offered[1:]}")
            else:
                action = scheduler.decide(index, task.pid, name)
        except BaseException:
            self.clock.ended = "aborted"  # a diverged replay: the clock must not run on
            raise
        if not action:
            return
        from .schedule import Choice
        self.choices.append(Choice(index, task.pid, name, action))
        cpu = task.cpu
        if action <= -2:  # another actor runs first, until it parks
            self.emit("sched:hold", cpu.id if cpu is not None else -1, task.pid, name,
                      f">{-2 - action}", index)
            self.stepper.target = -2 - action
            await SWITCH
            self.current = task
            return
        self.emit("sched:hold", cpu.id if cpu is not None else -1, task.pid, name, action, index)
        await self.hold(task, action)

    async def hold(self, task: "Task", action: int) -> None:
        """Hold the task back: ``action`` k > 0 is k jiffies off the CPU (uninterruptible:
        signals are looked at by the code after the point, as without the hold); -1 gives
        the CPU up and requeues behind what is runnable at this instant."""
        cpu = task.cpu
        if cpu is not None:
            self.put_cpu(task)
        if action > 0:
            await self.clock.sleep_until(self.clock.now + action)
        elif cpu is not None and cpu.rq:
            await self._wait_cpu(task, cpu)  # behind the CPU's queue, as a preemption
            return
        else:
            await self.backend.checkpoint()  # behind every actor ready to run now
        if cpu is not None:
            await self.get_cpu(task)
        else:
            self.current = task

    def signal_wake(self, task: "Task") -> None:
        """signal_wake_up: cut short an interruptible or killable sleep."""
        w = task.wake_on_signal
        if w is not None:
            task.wake_on_signal = None
            w.wake("signal")
