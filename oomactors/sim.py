"""Build a machine from a config and run all of its actors in virtual time.

One actor per CPU, one kswapd per node, the oom_reaper, init, and one per user thread
run in one anyio task group.  A clock driver advances virtual time whenever every actor
is blocked.  The same config and seed give the same event stream byte for byte, on trio
(the default) and in any process: trio's scheduler is made deterministic and seeded here.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import anyio

from .actors.cpuset_updater import spawn_cpuset_updater
from .actors.kthreads import kswapd, oom_reaper, vmstat_timer
from .actors.user import new_process, new_thread, user_task
from . import interrupt as _interrupt
from .config import Config
from .errors import ConfigError, InputError, OomactorsError, SimulationPanic
from policies.api import PolicyError
from .kernel.cpuset import cpuset_attach_group, task_mem_nodes
from .kernel.memcontrol import boot_charge, emit_memcg_usage
from .kernel.oom_kill import oom_task_view
from .kernel.task import PAGE_SIZE, Task
from .kernel.util import vm_acct_memory, vm_commit_limit
from .machine import Machine
from .run_gc import fewer_collections
from .psi import emit_psi
from .units import to_jiffies
from .userspace import spawn_daemon


# Set (to anything) to run the invariant checkers after every event of every run in this
# process and its children; the test suite sets it in tests/conftest.py.
CHECK_ENV = "OOMACTORS_INVARIANTS"


@dataclass
class RunResult:
    machine: Machine
    seed: int
    reason: str
    end_jiffies: int
    # every event, only when the caller asked (run(keep_records=True)): events stream to
    # sinks, so a long run's memory does not grow with its length
    kept: list[tuple] | None = field(repr=False, default=None)
    # controlled scheduling (oomactors/schedule.py): the choices that departed from the
    # default (empty without a scheduler), and the decision points the run passed
    schedule: Any = None
    decisions: int = 0
    events: int = 0  # how many events the run emitted

    @property
    def hz(self) -> int:
        return self.machine.hz

    @property
    def records(self) -> list[tuple]:
        if self.kept is None:
            raise RuntimeError("this run kept no records: pass keep_records=True to sim.run, "
                                 "or give it a sink")
        return self.kept


def _seed_trio(seed: int) -> None:
    """Make trio's run-queue order a function of the seed alone (see design.md)."""
    from trio._core import _run

    _run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    _run._r.seed(seed)


def build(cfg: Config, *, seed: int | None = None, backend: str = "trio", policy: Any = None,
          fixes: dict[str, bool] | None = None) -> Machine:
    if policy is None and cfg.policy is not None:
        from policies.registry import policy_for
        policy = policy_for(cfg)
    daemon = None
    if getattr(policy, "kind", "kernel") == "daemon":
        # a userspace killer runs beside the kernel's own policy; a daemon keeps state
        # while it runs, so each run gets a fresh one: a run stays a function of its
        # config, seed and policy however often one instance is passed in
        daemon, policy = type(policy)(policy.params), None
    m = Machine(cfg, backend=backend, policy=policy)
    m.daemon = daemon
    m.seed = cfg.run.seed if seed is None else seed
    m.rng = random.Random(m.seed)
    if fixes:
        unknown = sorted(set(fixes) - set(m.fixes))
        if unknown:
            raise InputError(f"fixes: unknown switch {unknown[0]!r} (known: {', '.join(m.fixes)})")
        m.fixes.update(fixes)
    return m


def _cpu_node(m: Machine) -> Callable[[int], int]:
    if len(m.nodes) == 1:
        return lambda cpu: 0
    per = max(1, len(m.sched.cpus) // len(m.nodes))
    return lambda cpu: min(cpu // per, len(m.nodes) - 1)


async def _main(m: Machine, duration: int, stop_when_idle: bool) -> str:
    cfg = m.cfg
    m.cpu_node = _cpu_node(m)
    clock = m.sched.clock
    clock.limit = duration
    clock.should_stop = (lambda: m.finished) if stop_when_idle else (lambda: False)
    stepper = m.sched.stepper
    stepper.seed(m.seed)
    # the actors run on the stepper (oomactors/stepper.py), inside this host task

    def exited() -> None:  # an actor ended: one less running (the stepper calls this)
        clock.active -= 1
        if clock.active <= 0 and not m.stopped:
            clock.idle()

    def spawn(fn: Callable[..., Any], *args: Any) -> None:
        clock.active += 1
        stepper.spawn(fn(*args))

    stepper.on_exit = exited
    m.fast_switches()

    m.spawn = spawn
    on_interrupt = clock.on_interrupt

    def interrupted() -> None:  # Ctrl-C: the machine stops recording, the stepper running
        on_interrupt()
        stepper.stop()

    clock.on_interrupt = interrupted
    try:  # from the first actor spawned: a failure while booting still closes them all
        m.emit_on("sim:run_start", -1, -1, m.seed, m.hz, len(m.sched.cpus), len(m.nodes),
                  m.totalram_pages, m.profile.name)
        if m.policy.name != "linux" or m.daemon is not None:
            m.emit_on("sim:policy", -1, -1, m.policy.name, m.daemon.name if m.daemon is not None else "")
        init, reaper = _kernel_tasks(m)
        spawn(_init_actor, m, init)
        for node in m.nodes:
            spawn(kswapd, m, node)
        spawn(oom_reaper, m, reaper)
        for cpu in m.sched.cpus:
            spawn(cpu.actor)
            spawn(vmstat_timer, m, cpu)
        if cfg.run.meminfo_interval.ns or cfg.run.meminfo_interval.jiffies:
            spawn(_meminfo, m, max(1, to_jiffies(cfg.run.meminfo_interval, m.hz)))
        _spawn_workload(m)
        if getattr(m, "daemon", None) is not None:
            spawn_daemon(m)  # a userspace OOM killer (oomactors/userspace.py)
        psi_every = to_jiffies(cfg.run.psi_samples, m.hz)
        if psi_every:
            _psi_samples(m, psi_every)
        spawn_cpuset_updater(m)
        emit_memcg_usage(m)
        reason = await _drive(m)
        if m.stopped:  # interrupted: no event but sim:run_end after Ctrl-C was asked for
            return reason
        emit_oom_scores(m)
        emit_commit(m)  # the last Committed_AS sample: what the run summary reports
        emit_memcg_usage(m)  # and the memcgs' last usage
        if psi_every or getattr(m, "daemon", None) is not None:
            emit_psi(m)  # the last PSI sample: the run's total stall times
    finally:
        m.stopped = True  # the actors are torn down now; what they do is not simulated
        m.halt_switches()
        if m.interrupted or _interrupt._requested:
            stepper.abandon()  # Ctrl-C: the command leaves now, a teardown could take seconds
        else:
            stepper.close()
    return reason


async def _drive(m: Machine) -> str:
    """Step the actors until the run ends.  The clock advances itself when the last running
    actor parks; an empty ready queue with the run not over means the count of running
    actors was off, and the clock is advanced here (a repair).  The host gets a checkpoint
    every few thousand steps (its cancellation and signals)."""
    clock = m.sched.clock
    stepper = m.sched.stepper
    while True:
        stepper.run_ready(_HOST_EVERY)
        if m.interrupted:
            return "interrupted"
        if stepper.ready:
            await anyio.lowlevel.checkpoint()
            continue
        if clock.ended is not None:
            return clock.ended
        clock.repairs += 1
        clock.active = 0
        clock.idle()


def _kernel_tasks(m: Machine) -> tuple[Task, Task]:
    """init (pid 1, never killed), a kswapd per node and the oom_reaper."""
    init = new_process(m, "init", 0, frozenset(), 0)
    for node in m.nodes:
        node.kswapd_task = new_process(m, f"kswapd{node.nid}", 0, frozenset(), 0, kthread=True)
    reaper = new_process(m, "oom_reaper", 0, frozenset(), 0, kthread=True)
    return init, reaper


def check_boot(cfg: Config, source: str = "<config>") -> Config:
    """Boot ``cfg``'s machine and workload without running it: what does not fit (task rss,
    boot-time caches, more tasks than pid_max or threads-max allow) is a ConfigError
    naming the key path, so a config that validates also boots."""
    try:
        m = build(cfg)
        m.cpu_node = _cpu_node(m)
        _kernel_tasks(m)
        _spawn_workload(m)
    except InputError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


_HOST_EVERY = 4096  # actor steps between two checkpoints of the host


def _spawn_workload(m: Machine) -> None:
    tasks = sum(g.count * g.threads for g in m.cfg.tasks)
    if tasks and m.nr_threads + tasks > m.max_threads:
        raise ConfigError(f"tasks: {tasks} tasks at boot, more than threads-max allows "
                          f"({m.max_threads}; kernel.threads_max)")
    if tasks and m.nr_threads + tasks > m.pid_max - 1:
        raise ConfigError(f"tasks: {tasks} tasks at boot, more than there are pids below "
                          f"kernel.pid_max ({m.pid_max})")
    for g, group in enumerate(m.cfg.tasks):
        start = to_jiffies(group.start, m.hz)
        stagger = to_jiffies(group.stagger, m.hz)
        caps = frozenset(group.caps)
        for i in range(group.count):
            if m.stopped or _interrupt._requested:  # Ctrl-C during the boot of a large machine
                if not m.stopped:
                    m.sched.clock.interrupt()
                return
            leader = new_process(m, group.name, group.uid, caps, group.oom_score_adj, nice=group.nice)
            leader.group = group.name
            if group.on_sigterm == "ignore":
                leader.signal.sigterm_action = "ignore"
            elif not group.sigterm_exit_delay.is_zero():
                leader.signal.sigterm_action = "handler"
                leader.signal.sigterm_delay = to_jiffies(group.sigterm_exit_delay, m.hz)
            cpuset_attach_group(m, leader, group)   # its cpuset, then its set_mempolicy
            memcg = m.memcgs[group.memcg]
            leader.memcg = leader.mm.memcg = None if memcg.is_root else memcg
            m.user_procs_alive += 1
            rss = group.rss // PAGE_SIZE
            if rss:
                mm = leader.mm
                mm.total_vm += rss
                m._boot_charge(f"tasks[{g}].rss" + (f" (process {i + 1} of {group.count})" if group.count > 1 else ""), "anon", mm, rss, -(-rss // 512), nodes=task_mem_nodes(m, leader))
                boot_charge(mm.memcg, rss)
                # memory held from boot was mapped (and charged to Committed_AS) before it
                vm_acct_memory(m, rss)
                mm.vm_accounted += rss
            threads = [leader] + [new_thread(m, leader) for _ in range(group.threads - 1)]
            for t in threads:
                t.memcg = leader.memcg
                m.spawn(user_task, m, t, group.program, start + i * stagger)


async def _init_actor(m: Machine, init: Task) -> None:
    await m.sched.get_cpu(init)
    while True:
        await m.sched.sleep(init, 3600 * m.hz, "task.sleep", interruptible=True)
        init.sigkill = False  # init ignores signals it has no handler for


def _psi_samples(m: Machine, every: int) -> None:
    """``run.psi_samples``: a sim:psi sample of every PSI group at this period, taken by the
    clock itself (no actor: sampling leaves the run's schedule and events as they were)."""
    clock = m.sched.clock

    def sample() -> None:
        emit_psi(m)
        clock.call_at(m.now + every, sample)

    clock.call_at(m.now + every, sample)


async def _meminfo(m: Machine, every: int) -> None:
    while True:
        await m.sched.clock.sleep_until(m.now + every)
        emit_meminfo(m)
        emit_commit(m)
        emit_memcg_usage(m)


def emit_oom_scores(m: Machine) -> None:
    """/proc/PID/oom_score of every user process, as the profile's era computes it (always
    against totalram + swap, never a memcg's or cpuset's size)."""
    prof = m.profile
    total = m.totalram_pages + m.total_swap_pages
    for p in m.processes():
        if p.is_kthread:
            continue
        points = prof.badness(oom_task_view(m, p), total, m.now, m.hz)
        m.emit_on("sim:oom_score", -1, p.pid, p.comm, prof.oom_score(points, total))


def emit_meminfo(m: Machine) -> None:
    tot = dict.fromkeys(("anon", "file", "dirty", "writeback", "shmem", "slab_reclaimable",
                         "slab_unreclaimable", "pagetables", "kernel"), 0)
    for z in m.zones:
        for k in tot:
            tot[k] += z.nr[k]
    free = sum(z.nr_free for z in m.zones)
    pcp = sum(sum(c.pcp) for c in m.sched.cpus)
    m.emit_on("sim:meminfo", -1, -1, free, pcp, tot["anon"], tot["file"], tot["dirty"],
              tot["writeback"], tot["shmem"], tot["slab_reclaimable"], tot["slab_unreclaimable"],
              tot["pagetables"], tot["kernel"], m.swap_free)
    emit_rss_stat(m)
    for z in m.zones:
        m.emit_on("sim:zoneinfo", -1, -1, z.node.nid, z.name, z.nr_free, z.min_wmark, z.low_wmark,
                  z.high_wmark, z.managed)


def emit_rss_stat(m: Machine) -> None:
    """kmem:rss_stat for every RSS counter of a user process that moved since its last
    sample (member order: MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES)."""
    for p in m.processes():
        mm = p.mm
        if mm is None or p.is_kthread:
            continue
        now = (mm.rss_file, mm.rss_anon, mm.swapents, mm.rss_shmem)
        if now != mm.rss_sampled:
            for member, (old, new) in enumerate(zip(mm.rss_sampled, now)):
                if old != new:
                    m.emit_on("kmem:rss_stat", -1, p.pid, p.pid, 1, member, new * PAGE_SIZE)
            mm.rss_sampled = now


def emit_commit(m: Machine) -> None:
    """/proc/meminfo's Committed_AS and CommitLimit, in pages."""
    m.emit_on("sim:commit", -1, -1, m.vm_committed_as, vm_commit_limit(m))


@fewer_collections()  # oomactors/run_gc.py: a run's garbage goes by reference counts
def run(cfg: Config, *, seed: int | None = None, backend: str = "trio", policy: Any = None,
        sinks: list[Callable[[tuple], None]] | None = None,
        checkers: list[Callable[[Machine, tuple], None]] | None = None,
        fixes: dict[str, bool] | None = None, duration: int | None = None,
        scheduler: Any = None, env_checks: bool = True, keep_records: bool = False,
        psi: bool | None = None) -> RunResult:
    """Run one simulation to its end and return the machine (and its events, if kept).

    Every event goes to each of ``sinks`` as it happens, then to the ``checkers``;
    ``keep_records=True`` also keeps them all in ``RunResult.records`` (memory grows with
    the run: for tests and short runs).  ``scheduler`` (an
    :class:`oomactors.schedule.Scheduler`) is asked at every decision point;
    ``env_checks=False`` leaves out the checkers :data:`CHECK_ENV` would add (for runs that
    check exactly the invariants they name, like ``oomactors explore``).

    ``psi``: keep the pressure stall bookkeeping (oomactors/psi.py).  It changes no
    decision of the kernel model, only what /proc/pressure reads, so by default (None) it
    is kept only when something can read it: a userspace daemon, ``run.psi_samples``, an
    invariant checker, or a caller that asks (``psi=True``, e.g. to read
    :func:`oomactors.psi.psi_totals` of the result)."""
    from .schedule import Schedule
    m = build(cfg, seed=seed, backend=backend, policy=policy, fixes=fixes)
    kept: list[tuple] | None = [] if keep_records else None
    if kept is not None:
        m.sinks.append(kept.append)
    m.sinks.extend(sinks or ())
    m.checkers.extend(checkers or ())
    if scheduler is not None:
        m.sched.scheduler = scheduler
        m.sched.stepper.controlled = bool(getattr(scheduler, "picks", False))  # choices need the batch
        scheduler.bind(m.sched)
    if env_checks and os.environ.get(CHECK_ENV):
        from .invariants import default_checkers, page_conservation
        if page_conservation not in m.checkers:
            m.checkers.extend(default_checkers())
    m.checkers_changed()
    if psi is None:
        psi = (m.daemon is not None or bool(to_jiffies(cfg.run.psi_samples, m.hz))
               or any(getattr(check, "reads_psi", True) for check in m.checkers))
    if not psi:
        m.psi = m.sched.psi = None  # nothing can read it: skip its bookkeeping
    dur = to_jiffies(cfg.run.duration, m.hz) if duration is None else duration
    if backend == "trio":
        _seed_trio(m.seed)
    with _interrupt.for_python_callers() as ctrl_c_pressed:
        try:
            reason = anyio.run(_main, m, dur, cfg.run.stop_when_idle, backend=backend)
        except BaseException as exc:  # noqa: BLE001 - unwrap the task group's exception group
            # a failing policy is the story even when the machine then panicked; a panic
            # ends the run; any other error of ours, or Ctrl-C, comes out of the task group
            error = _find(exc, PolicyError)
            if error is None and _find(exc, SimulationPanic) is None:
                error = _find(exc, (KeyboardInterrupt, OomactorsError))
                if error is None:
                    raise
            if error is not None:
                raise error from None
            reason = "panic"
        if m.interrupted:
            reason = "interrupted"
        m.emit_on("sim:run_end", -1, -1, reason)
        if ctrl_c_pressed():  # a Python caller's Ctrl-C: the run has its end mark; now stop it
            raise KeyboardInterrupt
    decisions = m.sched.decisions
    if scheduler is not None and reason != "interrupted":  # half a run proves no divergence
        scheduler.finish(decisions)
    return RunResult(m, m.seed, reason, m.now, kept, schedule=Schedule(tuple(m.sched.choices)),
                     decisions=decisions, events=m.nevents)


def _find(exc: BaseException, kind: type | tuple[type, ...]) -> BaseException | None:
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            found = _find(e, kind)
            if found is not None:
                return found
    return None
