"""``oomactors compare``: run every (config, policy, seed) and compare the outcomes.

Each run is an ordinary seeded simulation (:func:`oomactors.sim.run`); everything measured
here is computed from the run's events alone, by the small metric functions below, so the
same numbers come out of a live run and of a trace read back from disk (the PSI totals of
a trace come from its last ``sim:psi`` sample, when it has one).

Definitions (also in the README, "Comparing policies"):

* **killed processes** -- one per process an OOM killer killed: the kernel's
  ``sim:oom_kill`` (one per process, memory.oom.group members included), the processes it
  killed because they shared the victim's mm (``sim:oom_kill_shared``), 2.4's page-fault
  kill (``sim:vm_killing``), and a userspace killer's victims: a process it signalled
  (``userspace:kill``, or one per process of a ``userspace:cgroup_kill``) that then died of
  the signal.  A process killed twice (SIGTERM then SIGKILL, or a second OOM while it
  exits) counts once.
* **the hog** -- the task name (comm) whose processes together asked for the most memory
  in ``alloc`` steps (``sim:step``) before the first kill or the first stall, whichever came
  first: up to that moment every policy sees the same run, so the hog is a property of the
  workload and the seed, not of the policy.  If nobody allocated by then, the whole run
  counts; ties go to the name of the lowest pid; a run where nobody allocated has no hog.
* **collateral** -- killed processes whose name is not the hog's.
* **memory freed per kill** -- for a kernel kill, the victim's resident memory (anon + file
  + shmem, from the kill event) plus its swap entries (from the OOM report's task table);
  for a userspace kill, the RSS and swap its kill event carries; in MiB, averaged over the kills that have
  a size (2.4's page-fault kill has none).  A process that only shared a victim's mm
  frees nothing of its own.
* **stalls** -- the intervals tasks spend stalled on memory: direct reclaim (global and
  memcg, begin to end) and throttling (``sim:throttle``: congestion_wait, memory.high).
* **first pressure** -- the start of the first stall.  **recovery** -- the end of the last
  stall, or the last kill when no stall followed it.  A run that panicked, was stalling
  when it ended, or recovered less than a second (:data:`RECOVERY_QUIET_S`) before it was
  cut off (any end but ``idle``), never recovered: its recovery is the run's end, flagged.
* **stall time** -- the total time PSI's system-wide memory ``some`` and ``full`` states
  were held (:func:`oomactors.psi.psi_totals`).

The JSON schema is in :func:`as_json`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from . import interrupt
from .errors import InputError

PAGE_KB = 4
MIB_KB = 1024

# the numbers aggregated over seeds (median, min, max), in table order
METRICS: tuple[str, ...] = ("kills", "collateral", "freed_per_kill_mib", "pressure_to_recovery_s",
                            "stall_some_s", "stall_full_s", "alloc_failures", "panic")

KERNEL_KILLS = ("sim:oom_kill", "sim:oom_kill_shared", "sim:vm_killing")
STALL_BEGIN = {"vmscan:mm_vmscan_direct_reclaim_begin": "direct",
               "vmscan:mm_vmscan_memcg_reclaim_begin": "memcg"}
STALL_END = {"vmscan:mm_vmscan_direct_reclaim_end": "direct",
             "vmscan:mm_vmscan_memcg_reclaim_end": "memcg"}
_WANTED = frozenset(("sim:task_new", "sim:step", "sim:oom_header", "sim:slowpath_exit", "sim:panic",
                     "sim:run_end", "sim:throttle", "sim:exit_mm", "signal:signal_generate",
                     "sched:sched_process_exit", *KERNEL_KILLS, *STALL_BEGIN, *STALL_END))
SIGNAL_IGNORED = 1  # signal:signal_generate's result for a signal the process ignores
# a recovery needs this long without a stall or a kill before a run that was cut off ends
RECOVERY_QUIET_S = 1

Event = dict[str, Any]   # {"t": jiffies, "event": name, "pid": pid, **fields}


# --- reading a run's events --------------------------------------------------------------
def decode_events(records: Iterable[tuple], table: Any = None) -> tuple[list[Event], int]:
    """The events the metrics read, as dicts with ``t`` in jiffies, and the time of the last
    event (the run's end)."""
    from .report import EventTable
    table = table or EventTable()
    names, fields = table.names, table.fields
    out: list[Event] = []
    end = 0
    for rec in records:
        end = rec[0]
        name = names[rec[1]]
        if name in _WANTED or name.startswith("userspace:"):
            ev: Event = {"t": rec[0], "event": name, "pid": rec[3]}
            ev.update(zip(fields[rec[1]], rec[4:]))
            out.append(ev)
    return out, end


# --- the metrics, each a small function of the events -----------------------------------
@dataclass(frozen=True)
class Killed:
    """One killed process: when, who, by whom, and what it held (kB, None: not reported)."""

    t: int
    pid: int
    comm: str
    by: str                    # "kernel" or "userspace"
    freed_kb: int | None


def processes(events: Sequence[Event]) -> dict[int, tuple[int, str]]:
    """pid -> (tgid, comm of the thread group) for every user task."""
    out: dict[int, tuple[int, str]] = {}
    for ev in events:
        if ev["event"] == "sim:task_new" and not ev["kthread"]:
            tgid = ev["tgid"]
            comm = out[tgid][1] if tgid in out else ev["comm"]
            out[ev["pid"]] = (tgid, comm)
    return out


def killed_processes(events: Sequence[Event]) -> list[Killed]:
    """Every process killed by an OOM killer, once each, in order of the (first) kill.

    A kernel kill counts at its event.  A userspace kill counts when the process a daemon
    signalled (``userspace:kill`` that succeeded, or a member of a ``userspace:cgroup_kill``)
    then exits by that signal (exit reason ``killed`` or ``sigterm``); it is dated at the
    daemon's first signal.  Memory freed is what the victim held when it was picked: for a
    kernel kill its RSS from the kill event plus its swap entries from the OOM report's
    task table, for a userspace kill the RSS and swap its kill event carries."""
    procs = processes(events)
    swap_kb: dict[int, int] = {}       # from the latest OOM report's task table
    kernel: list[tuple[int, int, Killed]] = []
    seen: set[int] = set()
    signalled: dict[int, tuple[int, int, int]] = {}  # tgid -> (t, order, kB held) at the first signal
    exited: set[int] = set()
    ignored: dict[int, bool] = {}      # pid -> its latest signal was ignored (signal_generate)

    def tgid_of(pid: int) -> int:
        return procs.get(pid, (pid, ""))[0]

    def add(i: int, ev: Event, freed: int | None) -> None:
        tgid = tgid_of(ev["pid"])
        if tgid in seen or tgid in exited:
            return
        # the kernel killed a process a daemon had signalled but that was still alive
        # (a SIGTERM handler cleaning up): the kernel's kill is the one that counts
        signalled.pop(tgid, None)
        seen.add(tgid)
        kernel.append((ev["t"], i, Killed(ev["t"], tgid, procs.get(tgid, (tgid, ev["comm"]))[1], "kernel", freed)))

    def signal(i: int, t: int, pid: int, held_kb: int) -> None:
        tgid = tgid_of(pid)
        if tgid not in seen:
            signalled.setdefault(tgid, (t, i, held_kb))

    for i, ev in enumerate(events):
        name = ev["event"]
        if name == "sim:oom_header":
            # rows: pid uid tgid total_vm rss pgtables swapents oom_score_adj comm ...
            swap_kb = {r[0]: r[6] * PAGE_KB for r in ev["rows"]}
        elif name == "sim:oom_kill":
            rss = ev["anon_rss"] + ev["file_rss"] + ev["shmem_rss"]
            add(i, ev, rss + swap_kb.get(ev["pid"], 0))
        elif name == "sim:oom_kill_shared":
            add(i, ev, 0)   # the victim's mm: counted with the victim
        elif name == "sim:vm_killing":
            add(i, ev, None)  # 2.4 printed no sizes
        elif name == "signal:signal_generate":
            ignored[ev["pid"]] = ev["result"] == SIGNAL_IGNORED
        elif name == "userspace:kill":
            # kill(2) returns 0 for a signal the process ignores: that is no kill
            if ev["result"] == 0 and not ignored.get(ev["pid"], False):
                signal(i, ev["t"], ev["pid"], ev["rss_kb"] + ev["swap_kb"])
        elif name == "userspace:cgroup_kill":
            for pid, rss_kb, swap_kb_ in ev["members"]:
                signal(i, ev["t"], pid, rss_kb + swap_kb_)
        elif name == "sched:sched_process_exit":
            if ev["reason"] in ("killed", "sigterm") and tgid_of(ev["pid"]) in signalled:
                exited.add(tgid_of(ev["pid"]))
    user = [(t, i, Killed(t, tgid, procs.get(tgid, (tgid, "?"))[1], "userspace", held))
            for tgid, (t, i, held) in signalled.items() if tgid in exited]
    return [k for _t, _i, k in sorted(kernel + user, key=lambda x: (x[0], x[1]))]


def stall_intervals(events: Sequence[Event], end: int | None) -> tuple[list[tuple[int, int]], bool]:
    """Every stall as (start, end) in jiffies, and whether one was still open at ``end``
    (an open stall ends at ``end``; with ``end=None`` it is left out)."""
    spans: list[tuple[int, int]] = []
    open_: dict[tuple[int, str], int] = {}
    for ev in events:
        name = ev["event"]
        if name in STALL_BEGIN:
            open_.setdefault((ev["pid"], STALL_BEGIN[name]), ev["t"])
        elif name in STALL_END:
            start = open_.pop((ev["pid"], STALL_END[name]), None)
            if start is not None:
                spans.append((start, ev["t"]))
        elif name == "sim:throttle":
            spans.append((ev["t"], ev["t"] + ev["jiffies"]))
    still = bool(open_) or (end is not None and any(e > end for _s, e in spans))
    if end is not None:
        spans = [(s, min(e, end)) for s, e in spans] + [(s, end) for s in open_.values()]
    return spans, still


def hog(events: Sequence[Event]) -> str | None:
    """The name (comm) whose processes asked for the most memory in ``alloc`` steps before
    the first kill or stall (the whole run if nobody allocated by then); ties: lowest pid."""
    kills = killed_processes(events)
    cut = min([k.t for k in kills] + [s for s, _e in stall_intervals(events, None)[0]], default=None)
    procs = processes(events)

    def totals(until: int | None) -> dict[str, tuple[int, int]]:
        got: dict[str, tuple[int, int]] = {}
        for ev in events:
            if until is not None and ev["t"] > until:
                break
            if ev["event"] == "sim:step" and ev["op"] == "alloc" and ev["pages"] > 0:
                tgid, comm = procs.get(ev["pid"], (ev["pid"], "?"))
                pages, first = got.get(comm, (0, tgid))
                got[comm] = (pages + ev["pages"], min(first, tgid))
        return got

    got = totals(cut) or totals(None)
    if not got:
        return None
    return min(got, key=lambda c: (-got[c][0], got[c][1]))


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


def recovery(events: Sequence[Event], end: int, panicked: bool, kills: Sequence[Killed] = (), *,
             quiet: int = 0, ended_idle: bool = False) -> tuple[int | None, int | None, bool]:
    """(first pressure, recovery, recovered) in jiffies.  Recovery is the end of the last
    stall, or the last kill if no stall followed it (the kill is what ended the pressure).
    It never recovered -- the recovery is then the run's end -- after a panic, with a stall
    still open at the run's end, or when the recovery came less than ``quiet`` jiffies
    before the end of a run that was cut off (not ``ended_idle``: still stalling when time
    ran out).  No stall at all: (None, None, not panicked)."""
    spans, still = stall_intervals(events, end)
    if not spans:
        return None, None, not panicked
    first = min(s for s, _e in spans)
    last = max([e for _s, e in spans] + [k.t for k in kills])
    if still or panicked or (not ended_idle and last > end - quiet):
        return first, end, False
    return first, last, True


def stall_totals(source: Any) -> tuple[float | None, float | None]:
    """System-wide PSI memory ``some`` and ``full`` totals in seconds, from
    :func:`oomactors.psi.psi_totals`: ``source`` is the RunResult (exact) or the records,
    whose last ``sim:psi`` sample of "/" is used ((None, None) without one)."""
    from .psi import psi_totals
    tot = psi_totals(source)
    if tot is None:
        return None, None
    return round(tot["some_us"] / 1e6, 3), round(tot["full_us"] / 1e6, 3)


def alloc_failures(events: Sequence[Event]) -> int:
    """Allocations whose slow path gave up (as the run summary counts them)."""
    return sum(1 for ev in events if ev["event"] == "sim:slowpath_exit" and ev["result"] == "fail")


def end_reason(events: Sequence[Event], default: str | None = None) -> str | None:
    for ev in reversed(events):
        if ev["event"] == "sim:run_end":
            return ev["reason"]
    return default


def run_metrics(records: Sequence[tuple], *, hz: int, seed: int, reason: str | None = None,
                table: Any = None, psi_source: Any = None) -> dict[str, Any]:
    """Every metric of one run, from its event records (``psi_source``: where the PSI
    totals come from, the RunResult for a live run; default the records)."""
    events, end = decode_events(records, table)
    kills = killed_processes(events)
    hog_name = hog(events)
    panicked = any(ev["event"] == "sim:panic" for ev in events)
    reason = end_reason(events, reason)
    first, rec, recovered = recovery(events, end, panicked, kills, quiet=RECOVERY_QUIET_S * hz,
                                     ended_idle=reason == "idle")
    some, full = stall_totals(records if psi_source is None else psi_source)
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
        "alloc_failures": alloc_failures(events),
        "panic": int(panicked),
        "end_reason": reason,
        "simulated_seconds": round(end / hz, 6),
    }


# --- aggregation --------------------------------------------------------------------------
def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Median, min and max of each metric over the runs that have a value (None if none)."""
    out: dict[str, dict[str, Any]] = {"median": {}, "min": {}, "max": {}}
    for key in METRICS:
        vals = [r[key] for r in runs if r[key] is not None]
        if not vals:
            for agg in out.values():
                agg[key] = None
            continue
        med = statistics.median(vals)
        out["median"][key] = round(med, 6) if isinstance(med, float) else med
        out["min"][key] = min(vals)
        out["max"][key] = max(vals)
    out["median"]["recovered"] = sum(1 for r in runs if r["recovered"])
    return out


# --- running ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    config: str     # as given on the command line
    policy: str
    seed: int


def load_configs(paths: Sequence[str]) -> dict[str, Any]:
    from .config import load_config
    from .sim import check_boot
    return {p: check_boot(load_config(p), p) for p in paths}


def plan(cfgs: dict[str, Any], specs: Sequence[str]) -> dict[str, list[str]]:
    """The policies each config runs with: ``specs``, or (none given) the config's own
    ``[policy]`` name, else ``linux``.  Every (config, policy) is loaded once here, so an
    unknown policy or a bad parameter stops the comparison before the first run."""
    from policies.registry import policy_for
    out = {}
    for path, cfg in cfgs.items():
        own = [cfg.policy.name if cfg.policy is not None else "linux"]
        out[path] = list(dict.fromkeys(specs)) or own
        for spec in out[path]:
            policy_for(cfg, spec)
    return out


def run_one(cfg: Any, job: Job) -> dict[str, Any]:
    """One run's metrics.  A policy that fails mid-run is an InputError naming it, the
    config and the seed."""
    from policies.registry import policy_for

    from . import sim
    policy = policy_for(cfg, job.policy)   # a fresh instance per run: daemons keep state
    wanted, sink = wanted_records()
    try:
        result = sim.run(cfg, seed=job.seed, policy=policy, sinks=[sink], psi=True)  # stall totals
    except InputError as err:
        raise InputError(f"{job.config}, seed {job.seed}: {err}") from None
    interrupt.check()  # Ctrl-C ended the run: no metrics from half a run
    return run_metrics(wanted, hz=result.hz, seed=job.seed, reason=result.reason, psi_source=result)


def wanted_records() -> tuple[list[tuple], Callable[[tuple], None]]:
    """A sink that keeps only the records the metrics read (the run ends with
    sim:run_end, which is one of them, so the run's end time is kept too)."""
    from .events import EVENTS
    ids = frozenset(i for i, k in enumerate(EVENTS) if k.name in _WANTED or k.name.startswith("userspace:"))
    kept: list[tuple] = []
    append = kept.append

    def sink(rec: tuple) -> None:
        if rec[1] in ids:
            append(rec)

    return kept, sink


def _worker(unit: tuple[Any, Job]) -> dict[str, Any]:
    """One (config, policy, seed) unit, on a worker: the config travels loaded (a worker
    on another machine need not have the file)."""
    cfg, job = unit
    try:
        return run_one(cfg, job)
    except InputError as err:  # subclasses with their own __init__ do not unpickle: a plain one
        raise InputError(str(err)) from None


def compare(config_paths: Sequence[str], specs: Sequence[str], seeds: Sequence[int], *,
            jobs: int = 1, progress: Callable[[int, int, Job], None] | None = None,
            cluster: str | None = None) -> dict[str, Any]:
    """Run every (config, policy, seed) and return the comparison (see :func:`as_json`);
    no ``specs``: each config's own policy (see :func:`plan`).  ``progress(done, total,
    job)`` is called before each run (in this process) or after each (``jobs`` > 1 or a
    Dask ``cluster``, see :mod:`oomactors.sweep`).  The result does not depend on where
    the runs ran."""
    from .sweep import Sweep

    config_paths = list(dict.fromkeys(config_paths))
    seeds = list(seeds)
    cfgs = load_configs(config_paths)
    policies = plan(cfgs, specs)
    todo = [Job(c, p, s) for c in config_paths for p in policies[c] for s in seeds]
    with Sweep(min(jobs, len(todo)) if cluster is None else jobs, cluster) as sweep:
        count = [0]

        def done(i: int, _result: Any) -> None:
            count[0] += 1
            if progress and sweep.parallel:
                progress(count[0], len(todo), todo[i])

        def one(unit: tuple[Any, Job]) -> dict[str, Any]:
            if progress:
                progress(count[0], len(todo), unit[1])
            return run_one(*unit)

        out = sweep.map(_worker if sweep.parallel else one, [(cfgs[j.config], j) for j in todo], done)
        if progress and todo and not sweep.parallel:
            progress(len(todo), len(todo), todo[-1])
    return as_json(policies, seeds, dict(zip(todo, out)))


def as_json(policies: dict[str, list[str]], seeds: Sequence[int],
            results: dict[Job, dict[str, Any]]) -> dict[str, Any]:
    """The comparison as one JSON-ready object::

        {"seeds": [0, 1, ...],
         "hog": "<how the hog is chosen>",
         "configs": [{"config": "<path as given>",
                      "policies": [{"policy": "<name or spec as given>",
                                    "runs": [<run metrics, one per seed, in seed order>],
                                    "median": {<metric>: value, "recovered": <runs recovered>},
                                    "min": {<metric>: value}, "max": {<metric>: value}}]}]}

    Run metrics: ``seed``, ``kills`` (= ``kernel_kills`` + ``userspace_kills``), ``killed``
    (``t`` s, ``pid``, ``comm``, ``by``, ``freed_mib``), ``hog``, ``collateral``,
    ``freed_per_kill_mib``, ``first_pressure_s``, ``recovery_s``, ``pressure_to_recovery_s``,
    ``recovered``, ``stall_some_s``, ``stall_full_s``, ``alloc_failures``, ``panic`` (0/1),
    ``end_reason``, ``simulated_seconds``.  Times are simulated seconds; null means "does
    not apply" (no kill, no pressure).  median/min/max cover :data:`METRICS` over the runs
    where the metric is not null."""
    out_configs = []
    for path, specs in policies.items():
        pols = []
        for spec in specs:
            runs = [results[Job(path, spec, s)] for s in seeds]
            pols.append({"policy": spec, "runs": runs, **aggregate(runs)})
        out_configs.append({"config": path, "policies": pols})
    return {"seeds": list(seeds), "hog": HOG_DEFINITION, "configs": out_configs}


HOG_DEFINITION = ("the task name whose processes asked for the most memory in alloc steps before the "
                  "first kill or stall (the whole run if nobody allocated by then); ties: lowest pid")


# --- the table ------------------------------------------------------------------------------
COLUMNS: tuple[tuple[str, str], ...] = (
    ("kills", "kills"), ("collateral", "collateral"), ("freed_per_kill_mib", "MiB freed/kill"),
    ("pressure_to_recovery_s", "pressure→recovery (s)"), ("stall_some_s", "stall some (s)"),
    ("stall_full_s", "stall full (s)"), ("alloc_failures", "alloc failures"))


def cell(pol: dict[str, Any], key: str) -> str:
    """``median (min–max)``; just the median when every seed agrees; ``–`` when none applies."""
    med, lo, hi = (_num(pol[agg][key], key) for agg in ("median", "min", "max"))
    if pol["median"][key] is None:
        return "–"
    return med if lo == hi else f"{med} ({lo}–{hi})"


def _num(v: Any, key: str) -> str:
    if v is None:
        return "–"
    if key.endswith("_s"):
        return f"{v:.3f}"
    if key.endswith("_mib"):
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def tables(data: dict[str, Any]) -> list[Any]:
    """One rich table per config: a row per policy."""
    from collections import Counter

    from rich.table import Table
    n = len(data["seeds"])
    out = []
    for conf in data["configs"]:
        hogs = sorted({r["hog"] or "none" for p in conf["policies"] for r in p["runs"]})
        t = Table(title=f"{conf['config']} — {_seed_range(data['seeds'])}, hog: {', '.join(hogs)}",
                  title_justify="left", caption="median (min–max) over seeds; – : does not apply",
                  caption_justify="left")
        t.add_column("policy")
        for _key, head in COLUMNS:
            t.add_column(head, justify="right")
        t.add_column("recovered", justify="right")
        t.add_column("panics", justify="right")
        t.add_column("end")
        for pol in conf["policies"]:
            ends = Counter(r["end_reason"] for r in pol["runs"])
            end = ", ".join(k if v == n else f"{k} ×{v}" for k, v in sorted(ends.items()))
            t.add_row(pol["policy"], *(cell(pol, k) for k, _h in COLUMNS),
                      f"{pol['median']['recovered']}/{n}", f"{sum(r['panic'] for r in pol['runs'])}/{n}", end)
        out.append(t)
    return out


def _seed_range(seeds: Sequence[int]) -> str:
    if not seeds:
        return "none"
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {seeds[0]}–{seeds[-1]}"
