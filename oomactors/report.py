"""Everything a person reads after a run, computed from the event stream alone.

* :func:`summarize` -- the run summary (what ``oomactors run --json`` prints);
* :func:`console_lines` -- the kernel's own console text in the 5.10 format: the
  "invoked oom-killer" line, the task table, the ``oom-kill:`` summary line,
  "Out of memory: Killed process ...", the oom_reaper lines, allocation failures and
  panics.

Both work on a live run's records and on a trace read back from disk, since they only
need the event table (names and field names) and HZ.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from .console_mem import mem_info_lines, memcg_stat_lines
from .events import EVENTS
from .trace.stream import decode_record


class EventTable:
    """Names and field names by event id (the live table, or a trace header's)."""

    def __init__(self, names: Sequence[str] | None = None, fields: Sequence[Sequence[str]] | None = None):
        self.names = list(names) if names is not None else [k.name for k in EVENTS]
        self.fields = [tuple(f) for f in fields] if fields is not None else [k.fields for k in EVENTS]
        self.ids = {n: i for i, n in enumerate(self.names)}

    def decode(self, rec: tuple, hz: int) -> dict[str, Any]:
        return decode_record(self.names, self.fields, hz, rec)


def summarize(records: Iterable[tuple], *, seed: int, hz: int, table: EventTable | None = None,
              reason: str | None = None) -> dict[str, Any]:
    """The run summary of any iterable of records (a live run's, a trace file's)."""
    summary = Summary(hz=hz, table=table)
    for rec in records:
        summary.feed(rec)
    return summary.result(seed=seed, reason=reason)


class Summary:
    """The run summary as an online aggregator: a sink fed every record as it happens
    (``feed``), read at the end (``result``).  Its memory grows with the processes and
    kills of a run, not with its events."""

    def __init__(self, *, hz: int, table: EventTable | None = None) -> None:
        self.table = table = table or EventTable()
        self.hz = hz
        self.n = 0
        self.end = 0
        self.oom_invocations = self.contended = self.alloc_failures = 0
        self.kills: list[dict[str, Any]] = []
        self.points: dict[int, int] = {}
        self.panic = None
        self.tasks: dict[int, dict[str, Any]] = {}
        self.run_end: str | None = None
        self.committed_as: int | None = None
        self.committed_peak: int | None = None
        self.refusals = 0
        self.memcgs: dict[str, dict[str, Any]] = {}
        self.profile = None
        self.policy, self.daemon = "linux", None
        self.psi: dict[str, dict[str, Any]] = {}          # the last sim:psi sample of each group
        self.userspace: dict[str, list[dict[str, Any]]] = {}  # a daemon's actions
        # event id -> handler, for the kinds the summary reads (the rest are only counted)
        handlers = {
            "sim:out_of_memory_enter": self._oom_enter, "sim:oom_lock_contended": self._contended,
            "sim:slowpath_exit": self._slowpath_exit, "sim:oom_victim_chosen": self._victim,
            "sim:oom_kill": self._kill, "sim:panic": self._panic, "sim:task_new": self._task_new,
            "sched:sched_process_exit": self._exit, "sim:run_start": self._run_start,
            "sim:psi": self._psi, "sim:policy": self._policy, "sim:oom_score": self._oom_score,
            "sim:run_end": self._run_end_ev, "sim:vm_enough_memory": self._commit_check,
            "sim:commit": self._commit,
            **{name: self._userspace for name in _USERSPACE_SUMMARY},
            **{name: self._memcg for name in _MEMCG_SUMMARY},
        }
        self._by_id = {table.ids[name]: fn for name, fn in handlers.items() if name in table.ids}

    def feed(self, rec: tuple) -> None:
        self.n += 1
        self.end = rec[0]
        fn = self._by_id.get(rec[1])
        if fn is not None:
            fn(rec)

    __call__ = feed

    def _ev(self, rec: tuple) -> dict[str, Any]:
        return self.table.decode(rec, self.hz)

    def _oom_enter(self, rec: tuple) -> None:
        self.oom_invocations += 1

    def _contended(self, rec: tuple) -> None:
        self.contended += 1

    def _slowpath_exit(self, rec: tuple) -> None:
        if self._ev(rec)["result"] == "fail":
            self.alloc_failures += 1

    def _victim(self, rec: tuple) -> None:
        self.points[rec[3]] = self._ev(rec)["points"]

    def _kill(self, rec: tuple) -> None:
        ev = self._ev(rec)
        self.kills.append({"t": ev["t"], "pid": ev["pid"], "comm": ev["comm"],
                           "points": self.points.pop(ev["pid"], None), "message": ev["message"]})
        task = self.tasks.get(ev["pid"])
        if task is not None and task["outcome"] == "running":
            task["outcome"] = "killed, exiting"  # SIGKILL sent, not exited yet

    def _panic(self, rec: tuple) -> None:
        self.panic = self._ev(rec)["message"]

    def _task_new(self, rec: tuple) -> None:
        ev = self._ev(rec)
        if not ev["kthread"] and ev["tgid"] == ev["pid"]:
            self.tasks[ev["pid"]] = {"pid": ev["pid"], "comm": ev["comm"], "outcome": "running"}

    def _exit(self, rec: tuple) -> None:
        ev = self._ev(rec)
        if ev["pid"] in self.tasks:
            self.tasks[ev["pid"]]["outcome"] = "killed" if ev["reason"] == "killed" else "exited"

    def _run_start(self, rec: tuple) -> None:
        self.profile = self._ev(rec).get("profile", self.profile)

    def _psi(self, rec: tuple) -> None:
        ev = self._ev(rec)
        self.psi[ev["path"]] = {k: ev[k] for k in _PSI_FIELDS}

    def _userspace(self, rec: tuple) -> None:
        ev = self._ev(rec)
        key, fields = _USERSPACE_SUMMARY[ev["event"]]
        self.userspace.setdefault(key, []).append({f: ev[f] for f in fields})

    def _policy(self, rec: tuple) -> None:
        ev = self._ev(rec)
        self.policy, self.daemon = ev["policy"], ev["daemon"] or None

    def _oom_score(self, rec: tuple) -> None:
        if rec[3] in self.tasks:
            self.tasks[rec[3]]["oom_score"] = self._ev(rec)["oom_score"]

    def _run_end_ev(self, rec: tuple) -> None:
        self.run_end = self._ev(rec)["reason"]

    def _commit_check(self, rec: tuple) -> None:
        ev = self._ev(rec)
        if ev["result"] != 0:
            self.refusals += 1
        else:  # Committed_AS only grows at a granted check, so its peak is seen here
            self.committed_peak = max(self.committed_peak or 0, ev["committed"])

    def _commit(self, rec: tuple) -> None:
        self.committed_as = self._ev(rec)["committed_as"]
        self.committed_peak = max(self.committed_peak or 0, self.committed_as)

    def _memcg(self, rec: tuple) -> None:
        ev = self._ev(rec)
        _memcg_summary(self.memcgs, ev["event"], ev)

    def result(self, *, seed: int, reason: str | None = None) -> dict[str, Any]:
        """The summary of what was fed so far (``reason``: the end reason when no
        sim:run_end was fed, e.g. a run a violation ended)."""
        hz = self.hz
        return {
            "seed": seed,
            "profile": self.profile,
            "simulated_seconds": round(self.end / hz, 6),
            "end_reason": self.run_end if self.run_end is not None else reason,
            "events": self.n,
            "policy": self.policy,        # the kill policy that chose the kernel's victims
            "daemon": self.daemon,        # the userspace OOM killer, if one ran
            "oom_invocations": self.oom_invocations,
            "oom_lock_contended": self.contended,
            "kills": list(self.kills),
            "alloc_failures": self.alloc_failures,
            "panic": self.panic,
            "tasks": sorted((dict(t) for t in self.tasks.values()), key=lambda t: t["pid"]),
            # Committed_AS in pages: the last sim:commit sample (taken at the run's end) and
            # the highest value seen; and how many commit checks refused a request with -ENOMEM
            "committed_as": self.committed_as,
            "committed_as_peak": self.committed_peak,
            "overcommit_refusals": self.refusals,
            # memory cgroups by path, in pages: the last usage seen, the highest, the limits,
            # memory.events (hierarchical) and memory.events.local, pages charged past max
            "memcgs": self.memcgs,
            # only in runs that have them (default runs' summaries keep their keys): PSI by
            # group path from the last sim:psi sample (averages in hundredths of a percent,
            # totals in microseconds), and a userspace daemon's kills
            **({"psi": self.psi} if self.psi else {}),
            **({"userspace": self.userspace} if self.userspace else {}),
        }


_PSI_FIELDS = ("some_avg10", "some_avg60", "some_avg300", "some_total",
               "full_avg10", "full_avg60", "full_avg300", "full_total")
_USERSPACE_SUMMARY = {
    "userspace:kill": ("kills", ("t", "daemon", "pid", "comm", "sig", "reason", "result")),
    "userspace:cgroup_kill": ("cgroup_kills", ("t", "daemon", "path", "nr_tasks", "reason")),
}


_MEMCG_SUMMARY = {"sim:memcg_usage", "sim:memcg_event", "sim:memcg_force_charge"}


def _memcg_summary(memcgs: dict[str, dict[str, Any]], name: str, ev: dict[str, Any]) -> None:
    from .kernel.memcontrol import MEMCG_EVENTS, PAGE_COUNTER_MAX
    mc = memcgs.get(ev["path"])
    if mc is None:
        mc = memcgs[ev["path"]] = {
            "usage": 0, "peak_usage": 0, "max": None, "high": None, "swap_usage": 0, "swap_max": None,
            "events": dict.fromkeys(MEMCG_EVENTS, 0), "events_local": dict.fromkeys(MEMCG_EVENTS, 0),
            "force_charged": 0}
    if name == "sim:memcg_usage":
        for key in ("max", "high", "swap_max"):
            mc[key] = "max" if ev[key] == PAGE_COUNTER_MAX else ev[key]
        mc["swap_usage"] = ev["swap_usage"]
        # the page counter's high-water mark: the true peak, not the largest sample
        mc["peak_usage"] = max(mc["peak_usage"], ev["peak"])
    elif name == "sim:memcg_event":
        mc["events"][ev["name"]] += 1
        if ev["local"]:
            mc["events_local"][ev["name"]] += 1
    else:  # sim:memcg_force_charge
        mc["force_charged"] += ev["pages"]
    mc["usage"] = ev["usage"]
    mc["peak_usage"] = max(mc["peak_usage"], ev["usage"])


TASK_HEADER = "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name"


class Console510:
    """The 5.0-5.x report (dump_header / dump_tasks / dump_oom_summary / __oom_kill_process)."""

    tasks_state = True
    summary_line = True
    header = TASK_HEADER

    def invoked(self, ev: dict[str, Any]) -> str | None:
        return (f"{ev['comm']} invoked oom-killer: gfp_mask={ev['gfp_flags']}, order={ev['order']}, "
                f"oom_score_adj={ev['oom_score_adj']}")

    def row(self, r: Sequence[Any]) -> str:
        pid, uid, tgid, total_vm, rss, pgtables, swapents, adj, comm = r[:9]
        return (f"[{pid:7d}] {uid:5d} {tgid:5d} {total_vm:8d} {rss:8d} {pgtables:8d} {swapents:8d}"
                f"         {adj:5d} {comm}")

    def killed(self, ev: dict[str, Any]) -> str:
        return (f"{ev['message']}: Killed process {ev['pid']} ({ev['comm']}) total-vm:{ev['total_vm']}kB, "
                f"anon-rss:{ev['anon_rss']}kB, file-rss:{ev['file_rss']}kB, shmem-rss:{ev['shmem_rss']}kB, "
                f"UID:{ev['uid']} pgtables:{ev['pgtables']}kB oom_score_adj:{ev['oom_score_adj']}")


class Console6(Console510):
    """~6.8+: the task table splits rss into anon, file and shmem."""

    header = ("[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes "
              "swapents oom_score_adj name")

    def row(self, r: Sequence[Any]) -> str:
        if len(r) < 12:
            return super().row(r)
        pid, uid, tgid, total_vm, rss, pgtables, swapents, adj, comm, anon, file, shmem = r[:12]
        return (f"[{pid:7d}] {uid:5d} {tgid:5d} {total_vm:8d} {rss:8d} {anon:8d} {file:8d} {shmem:9d}"
                f" {pgtables:8d} {swapents:8d}         {adj:5d} {comm}")


class Console419(Console510):
    """4.19: nodemask on the invoked line, no oom-kill summary, "sacrifice child"."""

    summary_line = False

    def invoked(self, ev: dict[str, Any]) -> str | None:
        return (f"{ev['comm']} invoked oom-killer: gfp_mask={ev['gfp_flags']}, nodemask={ev['nodemask']}, "
                f"order={ev['order']}, oom_score_adj={ev['oom_score_adj']}")

    def killed(self, ev: dict[str, Any]) -> str:
        return (f"Killed process {ev['pid']} ({ev['comm']}) total-vm:{ev['total_vm']}kB, "
                f"anon-rss:{ev['anon_rss']}kB, file-rss:{ev['file_rss']}kB, shmem-rss:{ev['shmem_rss']}kB")


def legacy_oom_adj(adj: int) -> int:
    """/proc/PID/oom_adj as read back from oom_score_adj (fs/proc/base.c)."""
    if adj == 1000:
        return 15
    return min(15, int(adj * 17 / 1000))


class Console2636(Console419):
    """2.6.36: numeric gfp mask, oom_adj beside oom_score_adj, the cpu column."""

    tasks_state = False
    header = "[ pid ]   uid  tgid total_vm      rss cpu oom_adj oom_score_adj name"

    def invoked(self, ev: dict[str, Any]) -> str | None:
        gfp = str(ev["gfp_flags"]).split("(")[0]
        return (f"{ev['comm']} invoked oom-killer: gfp_mask={gfp}, order={ev['order']}, "
                f"oom_adj={legacy_oom_adj(ev['oom_score_adj'])}, oom_score_adj={ev['oom_score_adj']}")

    def row(self, r: Sequence[Any]) -> str:
        pid, uid, tgid, total_vm, rss, _pt, _swap, adj, comm = r[:9]
        cpu = r[12] if len(r) > 12 else 0
        return (f"[{pid:5d}] {uid:5d} {tgid:5d} {total_vm:8d} {rss:8d} {cpu:3d}     "
                f"{legacy_oom_adj(adj):3d}         {adj:5d} {comm}")

    def killed(self, ev: dict[str, Any]) -> str:
        return (f"Killed process {ev['pid']} ({ev['comm']}) total-vm:{ev['total_vm']}kB, "
                f"anon-rss:{ev['anon_rss']}kB, file-rss:{ev['file_rss']}kB")


class Console24(Console2636):
    """2.4 printed one line per kill and nothing else."""

    def invoked(self, ev: dict[str, Any]) -> str | None:
        return None

    def killed(self, ev: dict[str, Any]) -> str:
        return f"Out of Memory: Killed process {ev['pid']} ({ev['comm']})."


class Console414(Console419):
    """4.1-4.14: nr_ptes and nr_pmds columns (page tables in pages), a 5-wide pid, two
    spaces before order= (kernel-oom-killer.md §10.1, §10.6; mm/oom_kill.c at 4.14)."""

    tasks_state = False
    header = "[ pid ]   uid  tgid total_vm      rss nr_ptes nr_pmds swapents oom_score_adj name"

    def invoked(self, ev: dict[str, Any]) -> str | None:
        return (f"{ev['comm']} invoked oom-killer: gfp_mask={ev['gfp_flags']}, nodemask={ev['nodemask']},  "
                f"order={ev['order']}, oom_score_adj={ev['oom_score_adj']}")

    def row(self, r: Sequence[Any]) -> str:
        pid, uid, tgid, total_vm, rss, pgtables, swapents, adj, comm = r[:9]
        # the model keeps page tables as one byte count: all of it is shown as PTE pages
        return (f"[{pid:5d}] {uid:5d} {tgid:5d} {total_vm:8d} {rss:8d} {pgtables // 4096:7d} {0:7d}"
                f" {swapents:8d}         {adj:5d} {comm}")


class Console310(Console414):
    """3.x: a numeric gfp mask, nr_ptes without nr_pmds, no shmem-rss in the kill line."""

    header = "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name"

    def invoked(self, ev: dict[str, Any]) -> str | None:
        gfp = str(ev["gfp_flags"]).split("(")[0]
        return (f"{ev['comm']} invoked oom-killer: gfp_mask={gfp}, order={ev['order']}, "
                f"oom_score_adj={ev['oom_score_adj']}")

    def row(self, r: Sequence[Any]) -> str:
        pid, uid, tgid, total_vm, rss, pgtables, swapents, adj, comm = r[:9]
        return (f"[{pid:5d}] {uid:5d} {tgid:5d} {total_vm:8d} {rss:8d} {pgtables // 4096:7d}"
                f" {swapents:8d}         {adj:5d} {comm}")

    def killed(self, ev: dict[str, Any]) -> str:
        return (f"Killed process {ev['pid']} ({ev['comm']}) total-vm:{ev['total_vm']}kB, "
                f"anon-rss:{ev['anon_rss']}kB, file-rss:{ev['file_rss']}kB")


CONSOLES: dict[str, Console510] = {"2.4": Console24(), "2.6.36": Console2636(), "3.10": Console310(),
                                   "4.14": Console414(), "4.19": Console419(), "5.10": Console510(),
                                   "6.x": Console6()}


def console_lines(records: Iterable[tuple], *, hz: int, table: EventTable | None = None) -> list[str]:
    """The kernel log the run's kernel era would have printed for this run."""
    text = ConsoleText(hz=hz, table=table)
    out: list[str] = []
    for rec in records:
        if rec[1] in text.ids:
            out += text.feed(rec)
    return out


class ConsoleText:
    """The kernel console, one event at a time: :meth:`feed` returns the lines an event
    prints (often none), so a run's console can be shown while it runs (an event sink)
    and :func:`console_lines` is the same text for a whole run.  ``ids`` are the event ids
    that can print or change what is printed; others need not be fed."""

    def __init__(self, *, hz: int, table: EventTable | None = None) -> None:
        from .kernel.profiles import DEFAULT_PROFILE, PROFILES

        self.hz = hz
        self.table = table or EventTable()
        self.ids = frozenset(i for i, n in enumerate(self.table.names)
                             if n in _CONSOLE or n == "sim:out_of_memory_enter")
        self.header_printed = False
        self.memcg_info: dict[str, Any] | None = None
        self.mem_block: tuple[str, dict[str, Any]] | None = None  # show_mem or memory.stat, pending
        self.era = CONSOLES[PROFILES[DEFAULT_PROFILE].console]
        self.layout = PROFILES[DEFAULT_PROFILE].show_mem

    def feed(self, rec: tuple) -> list[str]:
        from .kernel.profiles import DEFAULT_PROFILE, PROFILES

        table, hz = self.table, self.hz
        name = table.names[rec[1]]
        out: list[str] = []
        if not name.startswith("sim:"):
            return out
        t = rec[0]
        if name == "sim:out_of_memory_enter":
            self.header_printed = False
            return out
        if name not in _CONSOLE:
            return out
        era = self.era

        def say(t: int, text: str) -> None:
            out.append(f"[{t / hz:12.6f}] {text}")

        ev = table.decode(rec, hz)
        if name == "sim:run_start":
            prof = PROFILES.get(ev.get("profile") or DEFAULT_PROFILE)
            if prof is not None:
                self.era = CONSOLES[prof.console]
                self.layout = prof.show_mem
        elif name == "sim:oom_header":
            self.header_printed = True
            block, self.mem_block = self.mem_block, None
            line = era.invoked(ev)
            if line is None:
                return out
            say(t, line)
            if self.memcg_info is not None:  # mem_cgroup_print_oom_meminfo, where show_mem() would be
                mi, self.memcg_info = self.memcg_info, None
                say(t, f"memory: usage {mi['usage_kb']}kB, limit {mi['limit_kb']}kB, failcnt {mi['failcnt']}")
                say(t, f"swap: usage {mi['swap_usage_kb']}kB, limit {mi['swap_limit_kb']}kB, "
                       f"failcnt {mi['swap_failcnt']}")
            if block is not None and self.layout:
                kind, bev = block
                if kind == "sim:show_mem":
                    lines = mem_info_lines(self.layout, bev)
                else:
                    lines = memcg_stat_lines(self.layout, bev["path"], bev["stat"],
                                             len(f"[{t / hz:12.6f}] "))
                for line in lines:
                    say(t, line)
            if ev["rows"]:
                if era.tasks_state:
                    say(t, "Tasks state (memory values in pages):")
                say(t, era.header)
                for r in ev["rows"]:
                    say(t, era.row(r))
        elif name == "sim:memcg_oom_meminfo":
            self.memcg_info = ev
        elif name in ("sim:show_mem", "sim:memcg_oom_stat"):
            self.mem_block = (name, ev)
        elif name == "sim:memcg_oom_group":
            say(t, f"Tasks in {ev['path']} are going to be killed due to memory.oom.group set")
        elif name == "sim:oom_sacrifice":
            say(t, f"{ev['message']}: Kill process {ev['pid']} ({ev['comm']}) score {ev['score']} "
                   f"or sacrifice child")
        elif name == "sim:oom_kill":
            if self.header_printed and era.summary_line:
                self.header_printed = False  # dump_oom_summary: once per report, not per group member
                oom_memcg = ev.get("oom_memcg") or ""
                memcg_ctx = f"oom_memcg={oom_memcg}" if oom_memcg else "global_oom"
                say(t, f"oom-kill:constraint={ev['constraint']},nodemask={ev['nodemask']},"
                       f"cpuset={ev.get('cpuset', '/')},mems_allowed={ev['mems_allowed']},{memcg_ctx},"
                       f"task_memcg={ev.get('task_memcg', '/')},task={ev['comm']},"
                       f"pid={ev['pid']},uid={ev['uid']}")
            say(t, era.killed(ev))
        elif name == "sim:reaper_reaped":
            say(t, f"oom_reaper: reaped process {ev['pid']} ({ev['comm']}), now anon-rss:{ev['anon_rss']}kB, "
                   f"file-rss:{ev['file_rss']}kB, shmem-rss:{ev['shmem_rss']}kB")
        elif name == "sim:reaper_unable":
            say(t, f"oom_reaper: unable to reap pid:{ev['pid']} ({ev['comm']})")
        elif name == "sim:reaper_pinned":
            say(t, f"oom killer {ev['pid']} ({ev['comm']}) has mm pinned by {ev['pinner']} ({ev['pinner_comm']})")
        elif name == "sim:page_alloc_failure":
            say(t, f"{ev['comm']}: page allocation failure: order:{ev['order']}, mode:{ev['gfp_flags']}, "
                   f"nodemask={ev['nodemask']},cpuset={ev['cpuset']},mems_allowed={ev['mems_allowed']}")
        elif name == "sim:vm_killing":
            say(t, f"VM: killing process {ev['comm']}")
        elif name == "sim:no_killable":
            say(t, "Out of memory and no killable processes...")
        elif name == "sim:callbacks_suppressed":
            say(t, f"{ev['func']}: {ev['missed']} callbacks suppressed")
        elif name == "sim:oom_victim_exiting":
            say(t, f"{ev['message']}: OOM victim {ev['pid']} ({ev['comm']}) is already exiting. "
                   "Skip killing the task")
        elif name == "sim:panic":
            say(t, f"Kernel panic - not syncing: {ev['message']}")
        return out


_CONSOLE = {"sim:run_start", "sim:vm_killing", "sim:oom_sacrifice", "sim:oom_header", "sim:oom_kill", "sim:reaper_reaped", "sim:reaper_unable",
            "sim:reaper_pinned", "sim:page_alloc_failure", "sim:no_killable", "sim:panic",
            "sim:memcg_oom_meminfo", "sim:memcg_oom_group", "sim:callbacks_suppressed",
            "sim:oom_victim_exiting", "sim:show_mem", "sim:memcg_oom_stat"}
