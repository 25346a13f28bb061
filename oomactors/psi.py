"""Pressure stall information for memory (kernel/sched/psi.c, Linux 4.20+; state rules of 6.x).

Every group -- the system (``/proc/pressure/memory``, which is also the root cgroup's) and
every memory cgroup (``memory.pressure``) -- tracks, per CPU, how many of its tasks are

* ``memstall``: inside a memory stall section (``psi_memstall_enter`` .. ``_leave``: direct
  reclaim, direct compaction, memcg reclaim in try_charge and for memory.high, the
  memory.high penalty sleep, kswapd's balance_pgdat), whether on a CPU or sleeping on the
  reclaim IO they issued;
* ``running``: runnable (on the CPU or queued for it), and of those, ``memstall_running``;
* and whether the CPU's current task is one of its tasks in a memory stall.

A task counts in its memcg and every ancestor up to the system group.  From the counts each
per-CPU slot has a state::

    SOME    = memstall > 0
    FULL    = memstall > 0 and (running == memstall_running or the CPU's current task
              of this group is in a stall: a reclaiming CPU does nothing productive)
    NONIDLE = memstall > 0 or running > 0

and accumulates the time spent in each.  Aggregation weighs each CPU by its non-idle
jiffies in the window (``collect_percpu_times``), so a stall on one of four busy CPUs is a
25% stall.  ``total=`` is the aggregated time in microseconds.

The running averages follow ``psi_avgs_work``: every ``PSI_FREQ`` (2 s + 1 tick) the stall
time of the period, as a percentage, is folded into fixed-point exponential averages
(``calc_load`` with ``EXP_10s``/``EXP_60s``/``EXP_300s``), periods without activity are
decayed in one go (``calc_load_n``), and the worker stops while a group is idle and is
re-armed ``PSI_FREQ`` after the next change -- so the averages lag the stall exactly as
the kernel's do.

Nothing here is a timer: the worker's runs are computed lazily.  Every state change and
every read first replays the worker runs that fell due since the group's last change;
between two changes a group's state is constant, so the replay is exact, costs nothing
when nobody looks, and adds no actor, event or scheduling decision to a run.

Reading (``show``) does what reading the file does in the kernel: it folds the per-CPU
times into ``total=`` at the moment of the read and updates the averages if they are due.
:func:`psi_totals` and the ``sim:psi`` samples only *peek* (no fold), so observing a run
does not change it.

Triggers (``psi_trigger_create``: "some 150000 1000000" written to the pressure file, as
lmkd does) are :class:`PsiTrigger`; their windows and rate limit are the kernel's, their
polling is driven by the waiting daemon (see :meth:`oomactors.userspace.DaemonHost.wait_psi`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# the numbers and the triggers live in their own modules; every name stays importable from here
from .psi_avgs import (  # noqa: F401 - re-exported
    NSEC_PER_SEC, NSEC_PER_USEC, FSHIFT, FIXED_1, EXP_10s, EXP_60s,
    EXP_300s, EXPS, WINDOW_MIN_US, WINDOW_MAX_US, UPDATES_PER_WINDOW, SOME,
    FULL, NONIDLE, STATE_NAMES, TSK_MEMSTALL, TSK_RUNNING, TSK_ONCPU,
    PSI_AVGS, PSI_POLL, psi_freq, calc_load, fixed_power_int, calc_load_n,
    calc_avgs, load_int, load_frac, centi, PressureLine, Pressure,
)
from .psi_trigger import PsiTrigger, poll_triggers  # noqa: F401 - re-exported

if TYPE_CHECKING:  # pragma: no cover
    from .kernel.memcontrol import MemCgroup
    from .kernel.task import Task
    from .machine import Machine


# --- per-CPU state and groups ----------------------------------------------------------------------
class PsiGroupCpu:
    """struct psi_group_cpu: task counts, the state they give, and the time in each state."""

    __slots__ = ("memstall", "running", "memstall_running", "oncpu_memstall", "state",
                 "state_start", "times", "times_prev")

    def __init__(self) -> None:
        self.memstall = 0
        self.running = 0
        self.memstall_running = 0
        self.oncpu_memstall = 0
        self.state = 0                  # bit s set: in state s (SOME, FULL, NONIDLE)
        self.state_start = 0            # ns
        self.times = [0, 0, 0]          # ns in SOME, FULL, NONIDLE, up to state_start
        self.times_prev = ([0, 0, 0], [0, 0, 0])  # per aggregator

    def test_states(self) -> int:
        state = 0
        if self.memstall:
            state = 1 << SOME
            if self.running == self.memstall_running or self.oncpu_memstall:
                state |= 1 << FULL
        if self.memstall or self.running:
            state |= 1 << NONIDLE
        return state

    def record_times(self, now: int) -> None:
        delta = now - self.state_start
        self.state_start = now
        st = self.state
        if delta and st:
            t = self.times
            if st & 1:
                t[SOME] += delta
                if st & 2:
                    t[FULL] += delta
            if st & 4:
                t[NONIDLE] += delta

    def recent(self, aggregator: int, now: int, commit: bool) -> list[int]:
        """get_recent_times: the time in each state since this aggregator's last look,
        the current state included up to ``now``."""
        times = list(self.times)
        st = self.state
        if st:
            elapsed = now - self.state_start
            for s in (SOME, FULL, NONIDLE):
                if st & (1 << s):
                    times[s] += elapsed
        prev = self.times_prev[aggregator]
        delta = [times[0] - prev[0], times[1] - prev[1], times[2] - prev[2]]
        if commit:
            self.times_prev[aggregator][:] = times
        return delta


class PsiGroup:
    """struct psi_group of one cgroup (the system group for the root)."""

    def __init__(self, path: str, parent: "PsiGroup | None", ncpus: int, hz: int) -> None:
        self.path = path
        self.parent = parent
        self.hz = hz
        self.jiffy_ns = NSEC_PER_SEC // hz
        self.period = psi_freq(hz) * self.jiffy_ns    # psi_period, ns
        self.pcpu = [PsiGroupCpu() for _ in range(ncpus)]
        self.total = ([0, 0], [0, 0])     # per aggregator: SOME, FULL stall ns
        self.avg_total = [0, 0]
        self.avg = ([0, 0, 0], [0, 0, 0])  # SOME, FULL: avg10, avg60, avg300 (fixed point)
        # group_init at boot
        self.avg_last_update = 0
        self.avg_next_update = self.period
        self.avgs_work_at: int | None = None  # jiffy the averaging worker runs next

    def __repr__(self) -> str:
        return f"<PsiGroup {self.path}>"

    # --- the averaging worker, replayed lazily ---------------------------------------------
    def advance(self, now: int) -> None:
        """Run every psi_avgs_work that was due up to jiffy ``now`` (the state has not
        changed since the group's last change, so each run sees what it would have seen)."""
        at = self.avgs_work_at
        while at is not None and at <= now:
            self._avgs_work(at)
            at = self.avgs_work_at

    def _avgs_work(self, at: int) -> None:
        now = at * self.jiffy_ns
        changed = self.collect(PSI_AVGS, now)
        if now >= self.avg_next_update:
            self.avg_next_update = self.update_averages(now)
        # keep the clock ticking while there is activity; an idle group stops it, and the
        # next state change re-arms it PSI_FREQ later (missed periods are decayed then)
        if changed & (1 << NONIDLE):
            self.avgs_work_at = at + (self.avg_next_update - now) // self.jiffy_ns + 1
        else:
            self.avgs_work_at = None

    def collect(self, aggregator: int, now: int) -> int:
        """collect_percpu_times: fold the per-CPU times into ``total``, each CPU weighted by
        its non-idle jiffies in the window.  Returns the states that saw time (a bit mask)."""
        changed, some, full = self._fold(aggregator, now, True)
        tot = self.total[aggregator]
        tot[SOME] += some
        tot[FULL] += full
        return changed

    def _fold(self, aggregator: int, now: int, commit: bool) -> tuple[int, int, int]:
        d_some = d_full = 0
        nonidle_total = 0
        changed = 0
        jns = self.jiffy_ns
        for c in self.pcpu:
            d = c.recent(aggregator, now, commit)
            if d[0]:
                changed |= 1
            if d[1]:
                changed |= 2
            if d[2]:
                changed |= 4
            nonidle = d[NONIDLE] // jns        # nsecs_to_jiffies
            nonidle_total += nonidle
            d_some += d[SOME] * nonidle
            d_full += d[FULL] * nonidle
        div = max(nonidle_total, 1)
        return changed, d_some // div, d_full // div

    def update_averages(self, now: int) -> int:
        """Fold the stall time since the last update into the averages; returns the time
        the next update is due (fixed PSI_FREQ steps from boot, missed ones skipped)."""
        avg_next_update, self.avg_total, self.avg = self._averages(now, self.total[PSI_AVGS])
        self.avg_last_update = now
        return avg_next_update

    def _averages(self, now: int, totals: Any) -> tuple[int, list[int], tuple[list[int], list[int]]]:
        """update_averages' arithmetic on copies: (next update, avg_total, avg)."""
        period_len = self.period
        expires = self.avg_next_update
        missed_periods = 0
        if now - expires >= period_len:
            missed_periods = (now - expires) // period_len
        avg_next_update = expires + (1 + missed_periods) * period_len
        period = now - (self.avg_last_update + missed_periods * period_len)
        avg_total = list(self.avg_total)
        avg = (list(self.avg[SOME]), list(self.avg[FULL]))
        for s in (SOME, FULL):
            sample = totals[s] - avg_total[s]
            # lockless sampling can slip time into the next period: never report > 100%,
            # carry the overage instead
            if sample > period:
                sample = period
            avg_total[s] += sample
            calc_avgs(avg[s], missed_periods, sample, period)
        return avg_next_update, avg_total, avg

    # --- state changes -----------------------------------------------------------------------
    def change(self, cpu: int, dm: int, dr: int, dmr: int, doncpu: int, now_j: int) -> None:
        """psi_group_change: move this CPU's counts, account the time of the old state,
        enter the new one; re-arm the averaging worker if it stopped."""
        self.advance(now_j)
        c = self.pcpu[cpu]
        c.memstall += dm
        c.running += dr
        c.memstall_running += dmr
        c.oncpu_memstall += doncpu
        c.record_times(now_j * self.jiffy_ns)
        c.state = c.test_states()
        if self.avgs_work_at is None:
            self.avgs_work_at = now_j + psi_freq(self.hz)

    # --- reading ----------------------------------------------------------------------------
    def show(self, now_j: int) -> Pressure:
        """psi_show: what reading the pressure file returns at jiffy ``now_j``."""
        self.advance(now_j)
        now = now_j * self.jiffy_ns
        self.collect(PSI_AVGS, now)
        if now >= self.avg_next_update:
            self.avg_next_update = self.update_averages(now)
        return self._pressure(self.total[PSI_AVGS])

    def peek(self, now_j: int) -> Pressure:
        """What a read at ``now_j`` would print, computed on copies: the run is left alone
        (a real read folds the per-CPU times, which moves later windows slightly)."""
        totals = self.peek_totals(now_j)
        now = now_j * self.jiffy_ns
        avg = self.avg
        if now >= self.avg_next_update:
            avg = self._averages(now, totals)[2]
        return self._pressure(totals, avg)

    def peek_totals(self, now_j: int) -> tuple[int, int]:
        """Total SOME and FULL stall in ns up to jiffy ``now_j`` (not folded)."""
        self.advance(now_j)
        _, some, full = self._fold(PSI_AVGS, now_j * self.jiffy_ns, False)
        tot = self.total[PSI_AVGS]
        return tot[SOME] + some, tot[FULL] + full

    def _pressure(self, totals: Any, avg: Any = None) -> Pressure:
        lines = []
        avg = self.avg if avg is None else avg
        for s in (SOME, FULL):
            a = avg[s]
            lines.append(PressureLine(centi(a[0]), centi(a[1]), centi(a[2]),
                                      totals[s] // NSEC_PER_USEC, (a[0], a[1], a[2])))
        return Pressure(lines[0], lines[1])


# --- the machine's PSI ----------------------------------------------------------------------------
class Psi:
    """All PSI groups of a machine and each task's psi flags.

    The scheduler calls :meth:`sched` when a task becomes runnable, is dispatched, is
    preempted or goes to sleep; kernel code calls :func:`psi_memstall_enter` and
    :func:`psi_memstall_leave` around memory stalls."""

    def __init__(self, hz: int, ncpus: int, root: "MemCgroup", memcgs: dict[str, "MemCgroup"],
                 clock: Any) -> None:
        self.hz = hz
        self.clock = clock
        self.system = PsiGroup("/", None, ncpus, hz)
        self.groups: dict[str, PsiGroup] = {"/": self.system}
        self._by_memcg: dict[int, PsiGroup] = {id(root): self.system}
        for path, mc in memcgs.items():  # parents come before their children
            if mc.is_root:
                continue
            g = PsiGroup(path, self._by_memcg[id(mc.parent)], ncpus, hz)
            self.groups[path] = g
            self._by_memcg[id(mc)] = g
        self._chains: dict[int, tuple[PsiGroup, ...]] = {}
        self._state: dict[int, list[int]] = {}   # pid -> [cpu, flags]

    def group(self, path: str) -> PsiGroup:
        """The group of a cgroup path ("/" is the system group); KeyError if unknown."""
        return self.groups[path]

    def chain(self, memcg: "MemCgroup | None") -> tuple[PsiGroup, ...]:
        """The groups a task of ``memcg`` counts in: its own and every ancestor's."""
        key = id(memcg)
        ch = self._chains.get(key)
        if ch is None:
            g = self._by_memcg.get(key, self.system) if memcg is not None else self.system
            out = []
            while g is not None:
                out.append(g)
                g = g.parent
            ch = self._chains[key] = tuple(out)
        return ch

    def flags(self, task: "Task") -> int:
        st = self._state.get(task.pid)
        return st[1] if st is not None else 0

    def in_memstall(self, task: "Task") -> bool:
        return bool(self.flags(task) & TSK_MEMSTALL)

    def _set(self, task: "Task", cpu: int, flags: int) -> None:
        st = self._state.get(task.pid)
        if st is None:
            st = self._state[task.pid] = [cpu, 0]
        self._apply(task, st, cpu, flags)

    def _apply(self, task: "Task", st: list[int], cpu: int, flags: int) -> None:
        """_set with the task's state entry ``st`` already looked up."""
        old_cpu, old = st
        if old_cpu == cpu and old == flags:
            return
        st[0], st[1] = cpu, flags
        now = self.clock.now
        chain = self.chain(task.memcg)
        if old_cpu == cpu:
            d = _DELTAS[old << 3 | flags]
            if d is None:
                # no count moves (an ONCPU toggle outside a stall): the state and the
                # time accounting are unchanged, so a group whose averaging worker is
                # armed and not yet due needs nothing; anything else takes the full path
                for g in chain:
                    at = g.avgs_work_at
                    if at is None or at <= now:
                        g.change(cpu, 0, 0, 0, 0, now)
                return
            dm, dr, dmr, don = d
            for g in chain:
                g.change(cpu, dm, dr, dmr, don, now)
            return
        # a migration: the task's counts leave the old CPU and arrive on the new one
        if old:
            dm, dr, dmr, don = _deltas(old, 0)
            for g in chain:
                g.change(old_cpu, dm, dr, dmr, don, now)
        if flags:
            dm, dr, dmr, don = _deltas(0, flags)
            for g in chain:
                g.change(cpu, dm, dr, dmr, don, now)

    def sched(self, task: "Task", cpu: int, running: bool, oncpu: bool) -> None:
        """The scheduler moved ``task``: runnable or not, on ``cpu`` or queued for it."""
        st = self._state.get(task.pid)
        flags = (st[1] & TSK_MEMSTALL) if st is not None else 0
        if running:
            flags |= TSK_RUNNING
        if oncpu:
            flags |= TSK_ONCPU
        if st is None:
            self._set(task, cpu, flags)
        else:
            self._apply(task, st, cpu, flags)

    def memstall(self, task: "Task", stalled: bool) -> None:
        st = self._state.get(task.pid)
        cpu = st[0] if st is not None else (task.cpu.id if task.cpu is not None else task.last_cpu)
        old = st[1] if st is not None else 0
        self._set(task, cpu, (old | TSK_MEMSTALL) if stalled else (old & ~TSK_MEMSTALL))

    # --- observation ----------------------------------------------------------------------
    def show(self, path: str = "/") -> Pressure:
        """Read ``/proc/pressure/memory`` ("/") or ``<path>/memory.pressure`` now."""
        return self.groups[path].show(self.clock.now)

    def peek(self, path: str = "/") -> Pressure:
        return self.groups[path].peek(self.clock.now)


def _deltas(old: int, new: int) -> tuple[int, int, int, int]:
    """Count changes (memstall, running, memstall_running, oncpu_memstall) of a flag move."""
    om, nm = old & TSK_MEMSTALL, new & TSK_MEMSTALL
    orr, nr = old & TSK_RUNNING, new & TSK_RUNNING
    oc, nc = old & TSK_ONCPU, new & TSK_ONCPU
    dm = (1 if nm else 0) - (1 if om else 0)
    dr = (1 if nr else 0) - (1 if orr else 0)
    dmr = (1 if nm and nr else 0) - (1 if om and orr else 0)
    don = (1 if nm and nc else 0) - (1 if om and oc else 0)
    return dm, dr, dmr, don


# _deltas of every (old, new) pair of flags, indexed old << 3 | new; None: all four are 0
_DELTAS: list[tuple[int, int, int, int] | None] = [
    (d if any(d) else None) for d in (_deltas(o, n) for o in range(8) for n in range(8))]


# --- the kernel's entry points ------------------------------------------------------------------
def psi_memstall_enter(m: "Machine", cur: "Task") -> bool:
    """Mark ``cur`` as stalled on memory.  Returns the flag to give back to
    :func:`psi_memstall_leave` (True: it already was, a nested section does nothing)."""
    psi = getattr(m, "psi", None)
    if psi is None:
        return True
    if psi.in_memstall(cur):
        return True
    psi.memstall(cur, True)
    return False


def psi_memstall_leave(m: "Machine", cur: "Task", pflags: bool) -> None:
    if pflags:
        return
    m.psi.memstall(cur, False)


# --- run-level figures ----------------------------------------------------------------------------
def emit_psi(m: "Machine") -> None:
    """One ``sim:psi`` sample per group (the system "/" first, then each memcg), peeked
    so the sample does not change the run."""
    psi = getattr(m, "psi", None)
    if psi is None:
        return
    for path, g in psi.groups.items():
        p = g.peek(m.now)
        m.emit_on("sim:psi", -1, -1, path, p.some.avg10, p.some.avg60, p.some.avg300, p.some.total,
                  p.full.avg10, p.full.avg60, p.full.avg300, p.full.total)


def psi_totals(source: Any) -> dict[str, int] | None:
    """System-wide total ``some`` and ``full`` memory stall time of a run, in microseconds
    (``/proc/pressure/memory``'s ``total=``): ``{"some_us": .., "full_us": ..}``.

    ``source`` is a :class:`~oomactors.sim.RunResult`, a :class:`~oomactors.machine.Machine`
    (exact at its current time, not disturbing it), or a list of records / decoded events,
    for which the last ``sim:psi`` sample of "/" is used (``None`` when the run emitted none:
    samples are only emitted with ``run.psi_samples`` set or a userspace daemon running)."""
    m = getattr(source, "machine", source)
    if hasattr(m, "sched") and m.psi is None:
        return None  # a run without PSI bookkeeping (sim.run psi=False): nothing to read
    psi = getattr(m, "psi", None)
    if psi is not None:
        some, full = psi.system.peek_totals(m.now)
        return {"some_us": some // NSEC_PER_USEC, "full_us": full // NSEC_PER_USEC}
    from .events import EVENT_ID
    sid = EVENT_ID["sim:psi"]
    last = None
    for rec in source:
        if isinstance(rec, dict):
            if rec.get("event") == "sim:psi" and rec.get("path") == "/":
                last = (rec["some_total"], rec["full_total"])
        elif rec[1] == sid and rec[4] == "/":
            last = (rec[8], rec[12])
    if last is None:
        return None
    return {"some_us": last[0], "full_us": last[1]}
