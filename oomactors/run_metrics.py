"""The metrics of one run for ``oomactors compare``, computed online.

:class:`RunMetrics` is a sink: a run feeds it each record as it happens (:meth:`RunMetrics.feed`)
and :meth:`RunMetrics.result` reads the metrics at the end.  It keeps what the definitions need
(see :mod:`oomactors.comparison`) as running figures -- the processes, the kills, the open
stalls, a few sums and extremes -- and never a list of events, so its memory grows with the
processes and kills of a run, not with its length.

The one metric that looks back is the hog: the biggest allocator *before the first kill or
stall*, where a stall only counts once it has ended and a daemon's kill only once its victim
died of the signal, so the moment is known only later.  The aggregator keeps the allocation
totals per name as they were at each moment that may turn out to be that cut (a stall that
began, a signal a daemon sent), until a kill or a finished stall settles it; the moments that
can still matter are bounded by the stalls open and the processes signalled at once.

The functions at the end (:func:`killed_processes`, :func:`hog`, :func:`recovery`,
:func:`stall_intervals`, :func:`run_metrics`) compute the same from a list of events or
records, by feeding it; the tests and the Python API use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

PAGE_KB = 4
MIB_KB = 1024

KERNEL_KILLS = ("sim:oom_kill", "sim:oom_kill_shared", "sim:vm_killing")
STALL_BEGIN = {"vmscan:mm_vmscan_direct_reclaim_begin": "direct",
               "vmscan:mm_vmscan_memcg_reclaim_begin": "memcg"}
STALL_END = {"vmscan:mm_vmscan_direct_reclaim_end": "direct",
             "vmscan:mm_vmscan_memcg_reclaim_end": "memcg"}
SIGNAL_IGNORED = 1  # signal:signal_generate's result for a signal the process ignores
# a recovery needs this long without a stall or a kill before a run that was cut off ends
RECOVERY_QUIET_S = 1

Event = dict[str, Any]   # {"t": jiffies, "event": name, "pid": pid, **fields}


@dataclass(frozen=True)
class Killed:
    """One killed process: when, who, by whom, and what it held (kB, None: not reported)."""

    t: int
    pid: int
    comm: str
    by: str                    # "kernel" or "userspace"
    freed_kb: int | None


class Stalls:
    """Direct reclaim (global, memcg: begin to end) and throttling, as running figures: the
    stalls open now, the earliest start and the latest end; ``spans`` (a list) also collects
    every finished stall, for :func:`stall_intervals`."""

    def __init__(self, spans: list[tuple[int, int]] | None = None) -> None:
        self.open: dict[tuple[int, str], int] = {}   # (pid, kind) -> start
        self.first: int | None = None
        self.last_end: int | None = None
        self.spans = spans

    def begin(self, pid: int, kind: str, t: int) -> bool:
        """A stall begins; False if that task was already stalled that way (the first begin
        counts)."""
        if (pid, kind) in self.open:
            return False
        self.open[pid, kind] = t
        if self.first is None or t < self.first:
            self.first = t
        return True

    def end(self, pid: int, kind: str, t: int) -> int | None:
        """A stall ends: its start (None: no such stall was open)."""
        start = self.open.pop((pid, kind), None)
        if start is not None:
            self._done(start, t)
        return start

    def throttle(self, t: int, jiffies: int) -> None:
        if self.first is None or t < self.first:
            self.first = t
        self._done(t, t + jiffies)

    def _done(self, start: int, end: int) -> None:
        if self.last_end is None or end > self.last_end:
            self.last_end = end
        if self.spans is not None:
            self.spans.append((start, end))

    def feed_event(self, ev: Event) -> None:
        name = ev["event"]
        if name in STALL_BEGIN:
            self.begin(ev["pid"], STALL_BEGIN[name], ev["t"])
        elif name in STALL_END:
            self.end(ev["pid"], STALL_END[name], ev["t"])
        elif name == "sim:throttle":
            self.throttle(ev["t"], ev["jiffies"])

    def recovery(self, end: int, panicked: bool, last_kill: int | None, *, quiet: int = 0,
                 ended_idle: bool = False) -> tuple[int | None, int | None, bool]:
        """See :func:`recovery`; ``last_kill``: the time of the last kill."""
        if self.first is None:
            return None, None, not panicked
        ends = [] if last_kill is None else [last_kill]
        if self.last_end is not None:
            ends.append(min(self.last_end, end))
        if self.open:
            ends.append(end)
        last = max(ends)
        still = bool(self.open) or (self.last_end is not None and self.last_end > end)
        if still or panicked or (not ended_idle and last > end - quiet):
            return self.first, end, False
        return self.first, last, True


class RunMetrics:
    """One run's metrics, fed record by record (``feed``, also a sink as ``sim.run(sinks=[m.feed])``)
    or event by event (``feed_event``, decoded dicts); ``table``: the event table of the
    records (a trace's header; default the live one)."""

    def __init__(self, table: Any = None) -> None:
        from .report import EventTable
        self.table = table = table or EventTable()
        self.end = 0                                   # the time of the last record: the run's end
        self.order = 0                                 # kills and signals so far (ties on time)
        self.procs: dict[int, tuple[int, str]] = {}   # pid -> (tgid, comm of the thread group)
        self.swap_kb: dict[int, int] = {}              # the latest OOM report's task table
        self.killed: list[tuple[int, int, Killed]] = []   # (t, order, kill), in the order found
        self.seen: set[int] = set()                    # tgids the kernel killed
        self.signalled: dict[int, tuple[int, int, int, str]] = {}  # tgid -> (t, order, kB, comm) at the 1st signal
        self.exited: set[int] = set()                  # signalled tgids that died of a signal
        self.ignored: dict[int, bool] = {}             # pid -> its latest signal was ignored
        self.stalls = Stalls()
        self.failures = 0
        self.panicked = False
        self.reason: str | None = None
        self.psi: tuple[int, int] | None = None        # the last sim:psi sample of "/"
        # the hog: pages asked per name, now and at each moment that may be the cut
        self.asked: dict[str, tuple[int, int]] = {}   # comm -> (pages, lowest tgid)
        self.cut: int | None = None                    # the first kill or finished stall so far
        self.at: dict[int, dict[str, tuple[int, int]]] = {}  # time -> ``asked`` after it
        self.mark: int | None = None                   # a time whose ``asked`` is still to be kept

        handlers: dict[str, Callable[[Event], None]] = {
            "sim:task_new": self._task_new, "sim:oom_header": self._oom_header,
            "sim:oom_kill": self._oom_kill, "sim:oom_kill_shared": lambda ev: self._kill(ev, 0),
            "sim:vm_killing": lambda ev: self._kill(ev, None),   # 2.4 printed no sizes
            "signal:signal_generate": self._signal_generate, "userspace:kill": self._ukill,
            "userspace:cgroup_kill": self._cgroup_kill, "sched:sched_process_exit": self._exit,
            "sim:throttle": self._throttle, "sim:panic": self._panic, "sim:run_end": self._run_end,
            "sim:psi": self._psi,
            **{name: self._stall_begin for name in STALL_BEGIN},
            **{name: self._stall_end for name in STALL_END}}
        self._by_name = handlers
        self._by_id = {table.ids[n]: fn for n, fn in handlers.items() if n in table.ids}
        step, slow = table.ids.get("sim:step", -1), table.ids.get("sim:slowpath_exit", -1)
        self._step, self._slow = step, slow
        if step >= 0:
            self._op, self._pages = (4 + table.fields[step].index(f) for f in ("op", "pages"))
        if slow >= 0:
            self._result = 4 + table.fields[slow].index("result")

    # --- feeding ---------------------------------------------------------------------------
    def feed(self, rec: tuple) -> None:
        """One record, as the run emits it."""
        t = self.end = rec[0]
        i = rec[1]
        if i == self._step:     # the most frequent by far: read in place
            if rec[self._op] == "alloc" and rec[self._pages] > 0:
                self._alloc(t, rec[3], rec[self._pages])
        elif i == self._slow:
            if rec[self._result] == "fail":
                self.failures += 1
        else:
            fn = self._by_id.get(i)
            if fn is not None:
                ev: Event = {"t": t, "event": self.table.names[i], "pid": rec[3]}
                ev.update(zip(self.table.fields[i], rec[4:]))
                fn(ev)

    __call__ = feed

    def feed_event(self, ev: Event) -> None:
        """One decoded event (``t`` in jiffies)."""
        self.end = ev["t"]
        name = ev["event"]
        if name == "sim:step":
            if ev["op"] == "alloc" and ev["pages"] > 0:
                self._alloc(ev["t"], ev["pid"], ev["pages"])
        elif name == "sim:slowpath_exit":
            if ev["result"] == "fail":
                self.failures += 1
        else:
            fn = self._by_name.get(name)
            if fn is not None:
                fn(ev)

    # --- processes and kills ---------------------------------------------------------------
    def _task_new(self, ev: Event) -> None:
        if ev["kthread"]:
            return
        pid, tgid = ev["pid"], ev["tgid"]
        self.ignored.pop(pid, None)
        if pid == tgid:   # a new process (its number may be a dead one's): nothing of the old one
            self.seen.discard(pid)
            self.exited.discard(pid)
            self.signalled.pop(pid, None)
            comm = ev["comm"]
        else:             # a thread takes its group's name
            comm = self.procs[tgid][1] if tgid in self.procs else ev["comm"]
        self.procs[pid] = (tgid, comm)

    def _tgid(self, pid: int) -> int:
        return self.procs.get(pid, (pid, ""))[0]

    def _oom_header(self, ev: Event) -> None:
        # rows: pid uid tgid total_vm rss pgtables swapents oom_score_adj comm ...
        self.swap_kb = {r[0]: r[6] * PAGE_KB for r in ev["rows"]}

    def _oom_kill(self, ev: Event) -> None:
        rss = ev["anon_rss"] + ev["file_rss"] + ev["shmem_rss"]
        self._kill(ev, rss + self.swap_kb.get(ev["pid"], 0))

    def _kill(self, ev: Event, freed: int | None) -> None:
        """A kernel kill: counts once per process, unless a daemon's signal already killed it."""
        self.order += 1
        tgid = self._tgid(ev["pid"])
        if tgid in self.seen or tgid in self.exited:
            return
        # the kernel killed a process a daemon had signalled but that was still alive
        # (a SIGTERM handler cleaning up): the kernel's kill is the one that counts
        self.signalled.pop(tgid, None)
        self.seen.add(tgid)
        comm = self.procs.get(tgid, (tgid, ev["comm"]))[1]
        self.killed.append((ev["t"], self.order, Killed(ev["t"], tgid, comm, "kernel", freed)))
        self._settle(ev["t"])

    def _signal_generate(self, ev: Event) -> None:
        self.ignored[ev["pid"]] = ev["result"] == SIGNAL_IGNORED

    def _ukill(self, ev: Event) -> None:
        # kill(2) returns 0 for a signal the process ignores: that is no kill
        if ev["result"] == 0 and not self.ignored.get(ev["pid"], False):
            self._signalled(ev["t"], ev["pid"], ev["rss_kb"] + ev["swap_kb"])

    def _cgroup_kill(self, ev: Event) -> None:
        for pid, rss_kb, swap_kb in ev["members"]:
            self._signalled(ev["t"], pid, rss_kb + swap_kb)

    def _signalled(self, t: int, pid: int, held_kb: int) -> None:
        tgid = self._tgid(pid)
        self.order += 1   # one per member of a cgroup.kill: they tie on time in this order
        if tgid not in self.seen and tgid not in self.signalled:
            self.signalled[tgid] = (t, self.order, held_kb, self.procs.get(tgid, (tgid, "?"))[1])
            self._maybe(t)

    def _exit(self, ev: Event) -> None:
        tgid = self._tgid(ev["pid"])
        if ev["reason"] in ("killed", "sigterm") and tgid in self.signalled and tgid not in self.exited:
            # a daemon's victim died of its signal: a kill, dated at the first signal
            self.exited.add(tgid)
            t, order, held, comm = self.signalled[tgid]
            self.killed.append((t, order, Killed(t, tgid, comm, "userspace", held)))
            self._settle(t)

    def kills(self) -> list[Killed]:
        """Every process killed so far, once each, in order of the (first) kill."""
        return [k for _t, _o, k in sorted(self.killed, key=lambda x: (x[0], x[1]))]

    # --- stalls ----------------------------------------------------------------------------
    def _stall_begin(self, ev: Event) -> None:
        if self.stalls.begin(ev["pid"], STALL_BEGIN[ev["event"]], ev["t"]):
            self._maybe(ev["t"])

    def _stall_end(self, ev: Event) -> None:
        start = self.stalls.end(ev["pid"], STALL_END[ev["event"]], ev["t"])
        if start is not None:
            self._settle(start)

    def _throttle(self, ev: Event) -> None:
        self.stalls.throttle(ev["t"], ev["jiffies"])
        self._settle(ev["t"])

    def _panic(self, ev: Event) -> None:
        self.panicked = True

    def _run_end(self, ev: Event) -> None:
        self.reason = ev["reason"]

    def _psi(self, ev: Event) -> None:
        if ev["path"] == "/":
            self.psi = (ev["some_total"], ev["full_total"])

    # --- the hog ---------------------------------------------------------------------------
    def _alloc(self, t: int, pid: int, pages: int) -> None:
        if self.mark is not None and t > self.mark:   # the totals of that moment are complete
            self.at[self.mark] = dict(self.asked)
            self.mark = None
        tgid, comm = self.procs.get(pid, (pid, "?"))
        got, first = self.asked.get(comm, (0, tgid))
        self.asked[comm] = (got + pages, min(first, tgid))

    def _maybe(self, t: int) -> None:
        """``t`` (now) may turn out to be the cut: keep the totals at its end."""
        if self.cut is not None or self.mark == t:
            return   # a cut no later than now is known already
        if self.mark is not None:   # nothing allocated since that one: the same totals
            self.at[self.mark] = dict(self.asked)
        self.mark = t
        if len(self.at) > 64:       # keep only the moments a stall still open or a signal began at
            live = set(self.stalls.open.values()) | {s[0] for s in self.signalled.values()}
            self.at = {k: v for k, v in self.at.items() if k in live}

    def _settle(self, t: int) -> None:
        """A kill, or a stall that began, at ``t``: the cut is at most ``t``.  ``t`` is now,
        or an earlier moment that :meth:`_maybe` marked then (a cut no later than it was
        not known yet, or it would not count now either)."""
        if self.cut is not None and self.cut <= t:
            return
        if t == self.end:
            self._maybe(t)
        elif self.mark is not None and self.mark > t:
            self.mark = None   # later than the cut: never read
        self.cut = t
        self.at = {k: v for k, v in self.at.items() if k <= t}

    def hog(self) -> str | None:
        """The name whose processes asked for the most memory in ``alloc`` steps before the
        first kill or stall (the whole run if nobody allocated by then); ties: lowest pid."""
        got = self.asked
        if self.cut is not None:
            got = (got if self.mark == self.cut else self.at[self.cut]) or got
        if not got:
            return None
        return min(got, key=lambda c: (-got[c][0], got[c][1]))

    # --- the result ------------------------------------------------------------------------
    def result(self, *, hz: int, seed: int, reason: str | None = None,
               psi_source: Any = None) -> dict[str, Any]:
        """Every metric of the run (see :func:`oomactors.comparison.as_json`).  ``reason``:
        how the run ended if no ``sim:run_end`` said it; ``psi_source``: where the PSI
        totals come from (the RunResult of a live run; default the last ``sim:psi`` sample)."""
        kills = self.kills()
        hog_name = self.hog()
        reason = self.reason if self.reason is not None else reason
        first, rec, recovered = self.stalls.recovery(
            self.end, self.panicked, max((k.t for k in kills), default=None),
            quiet=RECOVERY_QUIET_S * hz, ended_idle=reason == "idle")
        if psi_source is None:
            psi_source = [] if self.psi is None else [
                {"event": "sim:psi", "path": "/", "some_total": self.psi[0], "full_total": self.psi[1]}]
        some, full = stall_totals(psi_source)
        return {
            "seed": seed,
            "kills": len(kills),
            "kernel_kills": sum(1 for k in kills if k.by == "kernel"),
            "userspace_kills": sum(1 for k in kills if k.by == "userspace"),
            "killed": [{"t": round(k.t / hz, 6), "pid": k.pid, "comm": k.comm, "by": k.by,
                        "freed_mib": None if k.freed_kb is None else round(k.freed_kb / MIB_KB, 1)}
                       for k in kills],
            "hog": hog_name,
            "collateral": collateral(kills, hog_name),
            "freed_per_kill_mib": freed_per_kill_mib(kills),
            "first_pressure_s": None if first is None else round(first / hz, 6),
            "recovery_s": None if rec is None else round(rec / hz, 6),
            "pressure_to_recovery_s": None if first is None else round((rec - first) / hz, 6),
            "recovered": recovered,
            "stall_some_s": some,
            "stall_full_s": full,
            "alloc_failures": self.failures,
            "panic": int(self.panicked),
            "end_reason": reason,
            "simulated_seconds": round(self.end / hz, 6),
        }


# --- metrics of the kills and the PSI totals ------------------------------------------------
def collateral(kills: Sequence[Killed], hog_name: str | None) -> int:
    """Killed processes that were not the hog."""
    return sum(1 for k in kills if k.comm != hog_name)


def freed_per_kill_mib(kills: Sequence[Killed]) -> float | None:
    """Mean memory (MiB) a kill freed (see :func:`killed_processes`), over kills that have
    a size."""
    sizes = [k.freed_kb for k in kills if k.freed_kb is not None]
    if not sizes:
        return None
    return round(sum(sizes) / len(sizes) / MIB_KB, 1)


def stall_totals(source: Any) -> tuple[float | None, float | None]:
    """System-wide PSI memory ``some`` and ``full`` totals in seconds, from
    :func:`oomactors.psi.psi_totals`: ``source`` is the RunResult (exact) or the records,
    whose last ``sim:psi`` sample of "/" is used ((None, None) without one)."""
    from .psi import psi_totals
    tot = psi_totals(source)
    if tot is None:
        return None, None
    return round(tot["some_us"] / 1e6, 3), round(tot["full_us"] / 1e6, 3)


# --- the same from a list of events or records ----------------------------------------------
def fed(events: Iterable[Event]) -> RunMetrics:
    """An aggregator fed ``events`` (decoded dicts)."""
    m = RunMetrics()
    for ev in events:
        m.feed_event(ev)
    return m


def run_metrics(records: Iterable[tuple], *, hz: int, seed: int, reason: str | None = None,
                table: Any = None, psi_source: Any = None) -> dict[str, Any]:
    """Every metric of one run, from its event records (see :meth:`RunMetrics.result`)."""
    m = RunMetrics(table)
    for rec in records:
        m.feed(rec)
    return m.result(hz=hz, seed=seed, reason=reason, psi_source=psi_source)


def killed_processes(events: Iterable[Event]) -> list[Killed]:
    """Every process killed by an OOM killer, once each, in order of the (first) kill.

    A kernel kill counts at its event.  A userspace kill counts when the process a daemon
    signalled (``userspace:kill`` that succeeded, or a member of a ``userspace:cgroup_kill``)
    then exits by that signal (exit reason ``killed`` or ``sigterm``); it is dated at the
    daemon's first signal.  Memory freed is what the victim held when it was picked: for a
    kernel kill its RSS from the kill event plus its swap entries from the OOM report's
    task table, for a userspace kill the RSS and swap its kill event carries."""
    return fed(events).kills()


def hog(events: Iterable[Event]) -> str | None:
    """See :meth:`RunMetrics.hog`."""
    return fed(events).hog()


def stall_intervals(events: Iterable[Event], end: int | None) -> tuple[list[tuple[int, int]], bool]:
    """Every stall as (start, end) in jiffies, and whether one was still open at ``end``
    (an open stall ends at ``end``; with ``end=None`` it is left out)."""
    st = Stalls(spans=[])
    for ev in events:
        st.feed_event(ev)
    spans = st.spans or []
    still = bool(st.open) or (end is not None and st.last_end is not None and st.last_end > end)
    if end is not None:
        spans = [(s, min(e, end)) for s, e in spans] + [(s, end) for s in st.open.values()]
    return spans, still


def recovery(events: Sequence[Event], end: int, panicked: bool, kills: Sequence[Killed] = (), *,
             quiet: int = 0, ended_idle: bool = False) -> tuple[int | None, int | None, bool]:
    """(first pressure, recovery, recovered) in jiffies.  Recovery is the end of the last
    stall, or the last kill if no stall followed it (the kill is what ended the pressure).
    It never recovered -- the recovery is then the run's end -- after a panic, with a stall
    still open at the run's end, or when the recovery came less than ``quiet`` jiffies
    before the end of a run that was cut off (not ``ended_idle``: still stalling when time
    ran out).  No stall at all: (None, None, not panicked)."""
    st = Stalls()
    for ev in events:
        st.feed_event(ev)
    return st.recovery(end, panicked, max((k.t for k in kills), default=None), quiet=quiet,
                       ended_idle=ended_idle)
