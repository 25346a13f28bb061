"""compare's metrics as an online aggregator (oomactors/run_metrics.py): the same numbers as
the definitions computed over the whole event list, from state that does not grow with the
length of a run.

The reference below is the list-based form of the definitions (docs/compare.md), as compare
computed them before it aggregated online: every metric a function over all the events the
metrics read.  It lives here only to check the aggregator against it on real runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomactors import sim
from oomactors.comparison import collateral, freed_per_kill_mib, stall_totals
from oomactors.config import load_config, parse_config
from oomactors.events import EVENTS
from oomactors.run_metrics import (KERNEL_KILLS, PAGE_KB, RECOVERY_QUIET_S, SIGNAL_IGNORED, STALL_BEGIN, STALL_END,
                                   Killed, RunMetrics, hog, killed_processes)
from policies.registry import policy_for

ROOT = Path(__file__).resolve().parent.parent
WANTED = frozenset(("sim:task_new", "sim:step", "sim:oom_header", "sim:slowpath_exit", "sim:panic", "sim:run_end",
                    "sim:throttle", "signal:signal_generate", "sched:sched_process_exit", *KERNEL_KILLS,
                    *STALL_BEGIN, *STALL_END))


# --- the reference: the definitions over the whole list of events ---------------------------
def ref_metrics(records: list[tuple], *, hz: int, seed: int, reason: str | None, psi_source) -> dict:
    events = []
    for rec in records:
        kind = EVENTS[rec[1]]
        if kind.name in WANTED or kind.name.startswith("userspace:"):
            events.append({"t": rec[0], "event": kind.name, "pid": rec[3], **dict(zip(kind.fields, rec[4:]))})
    end = records[-1][0]
    procs: dict[int, tuple[int, str]] = {}
    for ev in events:
        if ev["event"] == "sim:task_new" and not ev["kthread"]:
            procs[ev["pid"]] = (ev["tgid"], procs[ev["tgid"]][1] if ev["tgid"] in procs else ev["comm"])
    kills = ref_kills(events, procs)
    spans, still, open_starts = ref_stalls(events)
    cut = min([k.t for k in kills] + [s for s, _e in spans], default=None)

    def asked(until):
        got: dict[str, tuple[int, int]] = {}
        for ev in events:
            if until is not None and ev["t"] > until:
                break
            if ev["event"] == "sim:step" and ev["op"] == "alloc" and ev["pages"] > 0:
                tgid, comm = procs.get(ev["pid"], (ev["pid"], "?"))
                pages, first = got.get(comm, (0, tgid))
                got[comm] = (pages + ev["pages"], min(first, tgid))
        return got

    got = asked(cut) or asked(None)
    hog_name = min(got, key=lambda c: (-got[c][0], got[c][1])) if got else None
    panicked = any(ev["event"] == "sim:panic" for ev in events)
    reason = next((ev["reason"] for ev in reversed(events) if ev["event"] == "sim:run_end"), reason)
    clipped = [(s, min(e, end)) for s, e in spans] + [(s, end) for s in open_starts]
    first = rec = None
    recovered = not panicked
    if clipped:
        first = min(s for s, _e in clipped)
        rec = max([e for _s, e in clipped] + [k.t for k in kills])
        recovered = True
        if (still or any(e > end for _s, e in spans) or panicked
                or (reason != "idle" and rec > end - RECOVERY_QUIET_S * hz)):
            rec, recovered = end, False
    some, full = stall_totals(psi_source)
    return {"seed": seed, "kills": len(kills), "kernel_kills": sum(k.by == "kernel" for k in kills),
            "userspace_kills": sum(k.by == "userspace" for k in kills),
            "killed": [{"t": round(k.t / hz, 6), "pid": k.pid, "comm": k.comm, "by": k.by,
                        "freed_mib": None if k.freed_kb is None else round(k.freed_kb / 1024, 1)} for k in kills],
            "hog": hog_name, "collateral": collateral(kills, hog_name), "freed_per_kill_mib": freed_per_kill_mib(kills),
            "first_pressure_s": None if first is None else round(first / hz, 6),
            "recovery_s": None if rec is None else round(rec / hz, 6),
            "pressure_to_recovery_s": None if first is None else round((rec - first) / hz, 6),
            "recovered": recovered, "stall_some_s": some, "stall_full_s": full,
            "alloc_failures": sum(ev["event"] == "sim:slowpath_exit" and ev["result"] == "fail" for ev in events),
            "panic": int(panicked), "end_reason": reason, "simulated_seconds": round(end / hz, 6)}


def ref_kills(events: list[dict], procs: dict[int, tuple[int, str]]) -> list[Killed]:
    swap: dict[int, int] = {}
    out: list[tuple[int, int, Killed]] = []
    seen: set[int] = set()
    signalled: dict[int, tuple[int, int, int]] = {}
    exited: set[int] = set()
    ignored: dict[int, bool] = {}

    def tgid_of(pid):
        return procs.get(pid, (pid, ""))[0]

    for i, ev in enumerate(events):
        name, pid = ev["event"], ev["pid"]
        if name == "sim:oom_header":
            swap = {r[0]: r[6] * PAGE_KB for r in ev["rows"]}
        elif name in KERNEL_KILLS and tgid_of(pid) not in seen | exited:
            tgid = tgid_of(pid)
            signalled.pop(tgid, None)
            seen.add(tgid)
            freed = {"sim:oom_kill": lambda: ev["anon_rss"] + ev["file_rss"] + ev["shmem_rss"] + swap.get(pid, 0),
                     "sim:oom_kill_shared": lambda: 0, "sim:vm_killing": lambda: None}[name]()
            out.append((ev["t"], i, Killed(ev["t"], tgid, procs.get(tgid, (tgid, ev["comm"]))[1], "kernel", freed)))
        elif name == "signal:signal_generate":
            ignored[pid] = ev["result"] == SIGNAL_IGNORED
        elif name in ("userspace:kill", "userspace:cgroup_kill"):
            members = ([(pid, ev["rss_kb"] + ev["swap_kb"])] if ev["result"] == 0 and not ignored.get(pid) else []) \
                if name == "userspace:kill" else [(p, r + s) for p, r, s in ev["members"]]
            for p, held in members:
                if tgid_of(p) not in seen:
                    signalled.setdefault(tgid_of(p), (ev["t"], i, held))
        elif name == "sched:sched_process_exit" and ev["reason"] in ("killed", "sigterm") \
                and tgid_of(pid) in signalled:
            exited.add(tgid_of(pid))
    out += [(t, i, Killed(t, tgid, procs.get(tgid, (tgid, "?"))[1], "userspace", held))
            for tgid, (t, i, held) in signalled.items() if tgid in exited]
    return [k for _t, _i, k in sorted(out, key=lambda x: (x[0], x[1]))]


def ref_stalls(events: list[dict]) -> tuple[list[tuple[int, int]], bool, list[int]]:
    spans, open_ = [], {}
    for ev in events:
        name = ev["event"]
        if name in STALL_BEGIN:
            open_.setdefault((ev["pid"], STALL_BEGIN[name]), ev["t"])
        elif name in STALL_END and (ev["pid"], STALL_END[name]) in open_:
            spans.append((open_.pop((ev["pid"], STALL_END[name])), ev["t"]))
        elif name == "sim:throttle":
            spans.append((ev["t"], ev["t"] + ev["jiffies"]))
    return spans, bool(open_), list(open_.values())


# --- the aggregator against the reference, on real runs -------------------------------------
# kernel kills (shared mm, memcg, a panic), daemons' kills (cgroup.kill too), stalls of every
# kind, and a forking workload with many kills (2.4's page-fault kill: test_compare.py)
RUNS = [("configs/quickstart.toml", "earlyoom"), ("configs/compare-collateral.toml", "youngest"),
        ("configs/parallel-oom.toml", None), ("configs/userspace-oomd.toml", None),
        ("configs/userspace-systemd-oomd.toml", None), ("configs/races/task_will_free_mem.toml", None),
        ("configs/unkillable-panic.toml", None), ("configs/memcg-high.toml", None),
        ("configs/memcg-max.toml", None), ("configs/thrashing.toml", None), ("pressure", None)]
_RUNS: dict = {}


def _run(path: str, spec: str | None):
    """(run with its records, the aggregator fed live as the run's sink), once per module."""
    if (path, spec) not in _RUNS:
        if path == "pressure":
            import sys
            sys.path.insert(0, str(ROOT / "bench"))
            try:
                import pressure
            finally:
                sys.path.remove(str(ROOT / "bench"))
            # the leaker's children, forked on the way, fill 1 GiB within the run
            text = pressure.config_text(30, cpus=4, tasks=100).replace('memory = "8GiB"', 'memory = "1GiB"')
            cfg = parse_config(text.replace('page_cache = "512MiB"', 'page_cache = "64MiB"'), "<pressure>")
        else:
            cfg = load_config(str(ROOT / path))
        policy = policy_for(cfg, spec or (cfg.policy.name if cfg.policy is not None else "linux"))
        metrics = RunMetrics()
        # the invariants are checked elsewhere; these runs are about the metrics
        res = sim.run(cfg, seed=3, policy=policy, sinks=[metrics.feed], keep_records=True, psi=True, env_checks=False)
        _RUNS[path, spec] = res, metrics
    return _RUNS[path, spec]


@pytest.mark.parametrize(("path", "spec"), RUNS)
def test_the_online_metrics_equal_the_definitions_on_real_runs(path, spec):
    res, metrics = _run(path, spec)
    got = metrics.result(hz=res.hz, seed=3, reason=res.reason, psi_source=res)
    assert got == ref_metrics(res.records, hz=res.hz, seed=3, reason=res.reason, psi_source=res)
    # a trace read back has no live PSI state: its last sim:psi sample is used
    again = RunMetrics()
    for rec in res.records:
        again.feed(rec)
    assert again.result(hz=res.hz, seed=3) == ref_metrics(res.records, hz=res.hz, seed=3, reason=None,
                                                          psi_source=res.records)


def test_the_reference_runs_cover_what_the_metrics_read():
    """The runs above are not vacuous: between them they have kernel, shared-mm and
    userspace kills, cgroup.kill, throttling, global and memcg reclaim, a panic, runs that
    ended idle and cut off, a forked process killed, and many kills in a run."""
    seen: dict[str, int] = {}
    ends, kills = set(), 0
    for path, spec in RUNS:
        res, metrics = _run(path, spec)
        for rec in res.records:
            seen[EVENTS[rec[1]].name] = seen.get(EVENTS[rec[1]].name, 0) + 1
        ends.add(res.reason)
        kills = max(kills, len(metrics.kills()))
        if path == "pressure":
            assert [k.comm for k in metrics.kills()] == ["leakchild"]
    for name in ("sim:oom_kill", "sim:oom_kill_shared", "userspace:kill", "userspace:cgroup_kill", "sim:throttle",
                 "sim:panic", "vmscan:mm_vmscan_direct_reclaim_begin", "vmscan:mm_vmscan_memcg_reclaim_begin"):
        assert seen.get(name, 0) > 0, name
    assert {"idle", "duration", "panic"} <= ends and kills >= 10


# --- bounded state ------------------------------------------------------------------------
def entries(obj) -> int:
    """Everything an object keeps, counted as the entries of its containers (nested)."""
    if isinstance(obj, dict):
        return len(obj) + sum(entries(v) for v in obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return len(obj) + sum(entries(v) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return sum(entries(v) for k, v in vars(obj).items() if not k.startswith("_") and k != "table")
    return 0


# four tasks that allocate and free in a loop under pressure, and a hog the kernel kills early
CHURN = """[machine]
cpus = 2
memory = "256MiB"
swap = "64MiB"
page_cache = "32MiB"
dirty = "0"

[kernel]
hz = 250

[run]
duration = "10s"
stop_when_idle = false

[[tasks]]
name = "churn"
count = 4
rss = "24MiB"
program = [ { op = "repeat", steps = [
    { op = "alloc", size = "44MiB" },
    { op = "compute", time = "2ms" },
    { op = "free", size = "44MiB" },
    { op = "sleep", time = "4ms" },
] } ]

[[tasks]]
name = "hog"
start = "500ms"
program = [ { op = "alloc", size = "150MiB", rate = "300MiB/s" }, { op = "sleep", time = "1000s" } ]"""


@pytest.mark.parametrize(("path", "short", "long"), [("configs/nofs-loop.toml", 0.5, 2.5), ("churn", 2, 12)])
def test_the_kept_state_does_not_grow_with_the_run(path, short, long):
    """nofs-loop allocates in a loop that never ends (slow path after slow path); the churn
    allocates and frees, stalls and has a kill: the same processes and kills at both
    lengths, several times the records compare used to keep."""
    cfg = parse_config(CHURN, "<churn>") if path == "churn" else load_config(str(ROOT / path))
    ids = frozenset(i for i, k in enumerate(EVENTS) if k.name in WANTED)
    kept, wanted = [], []
    for seconds in (short, long):
        metrics, n = RunMetrics(), [0]

        def sink(rec, metrics=metrics, n=n):
            n[0] += rec[1] in ids
            metrics.feed(rec)

        sim.run(cfg, seed=0, duration=int(seconds * cfg.kernel.hz), sinks=[sink], env_checks=False)
        kept.append(entries(metrics))
        wanted.append(n[0])   # what compare used to keep: every record the metrics read
    assert wanted[1] > 2.5 * wanted[0] > 1000
    assert kept[0] == kept[1] < wanted[0] // 10


# --- the hog's cut, known only later --------------------------------------------------------
def _task(pid, comm):
    return {"t": 0, "event": "sim:task_new", "pid": pid, "tgid": pid, "comm": comm, "kthread": 0}


def _ev(t, name, pid, **fields):
    return {"t": t, "event": name, "pid": pid, **fields}


def _alloc(t, pid, pages):
    return _ev(t, "sim:step", pid, op="alloc", pages=pages)


def _ukill(t, pid):
    return _ev(t, "userspace:kill", pid, daemon="d", comm="", sig=9, reason="", result=0, rss_kb=0, swap_kb=0)


PROCS = [_task(10, "a"), _task(20, "b"), _task(30, "c")]
KILL_AT_10 = _ev(10, "sim:oom_kill", 30, comm="c", anon_rss=0, file_rss=0, shmem_rss=0)


def test_a_stall_or_a_signal_moves_the_hogs_cut_only_once_it_is_settled():
    begin = _ev(2, "vmscan:mm_vmscan_direct_reclaim_begin", 30, order=0, gfp_flags="")
    # a stall that never ends and a signal whose process lives on are no cut: the kill at 10 is
    assert hog(PROCS + [_alloc(1, 10, 100), begin, _ukill(3, 20), _alloc(5, 20, 200), KILL_AT_10]) == "b"
    # the stall ends later: the cut was its start, when only "a" had asked
    end = _ev(12, "vmscan:mm_vmscan_direct_reclaim_end", 30, nr_reclaimed=0)
    assert hog(PROCS + [_alloc(1, 10, 100), begin, _alloc(5, 20, 200), KILL_AT_10, end]) == "a"
    # the signalled process dies of it: the cut is the signal, and what was asked in the
    # same jiffy after it still counts
    died = _ev(20, "sched:sched_process_exit", 20, comm="b", reason="killed")
    events = PROCS + [_alloc(1, 10, 100), _ukill(3, 20), _alloc(3, 20, 150), _alloc(5, 30, 999), died]
    assert hog(events) == "b"
    assert [(k.t, k.pid, k.by) for k in killed_processes(events)] == [(3, 20, "userspace")]


def test_a_pid_taken_again_is_a_new_process():
    """pid_max wraps: a number a killed process had may be a new process's, killed in turn."""
    events = [_task(40, "old"), _ev(5, "sim:oom_kill", 40, comm="old", anon_rss=4, file_rss=0, shmem_rss=0),
              _ev(6, "sched:sched_process_exit", 40, comm="old", reason="killed"),
              _ev(9, "sim:task_new", 40, tgid=40, comm="new", kthread=0),
              _ev(20, "sim:oom_kill", 40, comm="new", anon_rss=8, file_rss=0, shmem_rss=0)]
    assert [(k.t, k.pid, k.comm, k.freed_kb) for k in killed_processes(events)] == [(5, 40, "old", 4),
                                                                                   (20, 40, "new", 8)]


def test_many_moments_that_may_be_the_cut():
    """70 tasks begin to stall one jiffy apart, each after asking for memory, and none ends
    until the 40th does: the cut is that one's start, whatever the aggregator kept on the way."""
    events = [_task(100 + i, f"t{i}") for i in range(70)]
    for i in range(70):
        events += [_alloc(1 + i, 100 + i, 1000 - 10 * i if i != 39 else 5000),
                   _ev(1 + i, "vmscan:mm_vmscan_direct_reclaim_begin", 100 + i, order=0, gfp_flags="")]
    events += [_alloc(80, 100, 10**6), _ev(90, "vmscan:mm_vmscan_direct_reclaim_end", 139, nr_reclaimed=0)]
    assert hog(events) == "t39"                 # 5000 pages by the cut; t0's million came after
    assert hog(events[:-1]) == "t0"             # no stall ended: the whole run counts
