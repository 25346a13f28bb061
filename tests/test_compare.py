"""``oomactors compare``: the metrics (on hand-made events and on real runs), the table,
the JSON, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from oomactors import sim
from oomactors.cli import main
from oomactors.comparison import (COLUMNS, Killed, aggregate, cell, collateral, compare, freed_per_kill_mib, hog,
                                  killed_processes, recovery, run_metrics, stall_intervals)
from oomactors.config import load_config
from oomactors.psi import psi_totals
from oomactors.report import summarize
from policies.registry import load_policy

ROOT = Path(__file__).resolve().parent.parent
QUICK = str(ROOT / "configs/quickstart.toml")
COLLATERAL = str(ROOT / "configs/compare-collateral.toml")


def cli(*args: str):
    """The CLI in this process; compare runs its simulations here too (``-j 1``), so that
    the ``same_runs`` memo below sees them (test_sweeps.py covers ``--jobs`` and clusters)."""
    if args[:1] == ("compare",) and "-j" not in args and "--jobs" not in args:
        args = (*args, "-j", "1")
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def same_runs(monkeypatch):
    """Memoize sim.run within a test, so the table and the JSON of one comparison cost one set
    of runs (a run is a function of its config, seed and policy)."""
    real = sim.run
    memo: dict = {}

    def run(cfg, *, seed=None, policy=None, sinks=None, **kw):
        key = (json.dumps(cfg.as_dict(), sort_keys=True, default=str), seed, type(policy),
               repr(getattr(policy, "params", None)))
        if key not in memo:
            kw["keep_records"] = True
            memo[key] = real(cfg, seed=seed, policy=policy, **kw)
        for rec in memo[key].records:  # events stream to sinks: a memoized run feeds them too
            for sink in sinks or ():
                sink(rec)
        return memo[key]

    monkeypatch.setattr(sim, "run", run)
    return memo


# --- hand-made events -------------------------------------------------------------------
def task(pid: int, comm: str, tgid: int | None = None, t: int = 0) -> dict:
    return {"t": t, "event": "sim:task_new", "pid": pid, "tgid": tgid or pid, "comm": comm, "kthread": 0}


def ev(t: int, name: str, pid: int, **fields) -> dict:
    return {"t": t, "event": name, "pid": pid, **fields}


def oom_kill(t: int, pid: int, comm: str, anon_kb: int, file_kb: int = 0) -> dict:
    return ev(t, "sim:oom_kill", pid, comm=comm, anon_rss=anon_kb, file_rss=file_kb, shmem_rss=0)


def sig(t: int, pid: int, signo: int) -> dict:
    return ev(t, "signal:signal_generate", pid, sig=signo, comm="", group=1, result=0)


def exit_(t: int, pid: int, reason: str) -> dict:
    return ev(t, "sched:sched_process_exit", pid, comm="", reason=reason)


def alloc(t: int, pid: int, pages: int) -> dict:
    return ev(t, "sim:step", pid, op="alloc", pages=pages)


def reclaim(begin: int, end: int, pid: int) -> list[dict]:
    return [ev(begin, "vmscan:mm_vmscan_direct_reclaim_begin", pid, order=0, gfp_flags=""),
            ev(end, "vmscan:mm_vmscan_direct_reclaim_end", pid, nr_reclaimed=0)]


PROCS = [task(10, "hog"), task(11, "hog", tgid=10), task(20, "db"), task(30, "web"), task(31, "web"),
         task(40, "cron")]


def test_kernel_kills_count_processes_once_with_their_memory():
    events = PROCS + [
        ev(5, "sim:oom_header", 99, rows=[[11, 0, 10, 0, 0, 0, 256, 0, "hog"]]),
        oom_kill(5, 11, "hog", anon_kb=4096, file_kb=1024),     # a thread: counts as process 10
        ev(5, "sim:oom_kill_shared", 40, comm="cron", victim=11, victim_comm="hog"),
        oom_kill(9, 11, "hog", anon_kb=100),                     # killed again while exiting
        ev(12, "sim:vm_killing", 20, comm="db"),
    ]
    kills = killed_processes(events)
    assert [(k.pid, k.comm, k.by, k.freed_kb) for k in kills] == [
        (10, "hog", "kernel", 4096 + 1024 + 256 * 4),   # rss + the report's swap entries
        (40, "cron", "kernel", 0),                     # shared the victim's mm: freed nothing of its own
        (20, "db", "kernel", None)]                    # 2.4 printed no sizes
    assert collateral(kills, "hog") == 2
    assert freed_per_kill_mib(kills) == round((6144 + 0) / 2 / 1024, 1)


def test_userspace_kills_count_when_the_signalled_process_dies():
    def ukill(t, pid, comm, signo, result=0, rss_kb=0, swap_kb=0):
        return ev(t, "userspace:kill", pid, daemon="d", comm=comm, sig=signo, reason="", result=result,
                  rss_kb=rss_kb, swap_kb=swap_kb)

    events = PROCS + [
        # SIGTERM honoured (handler), then a SIGKILL to the same dying process: one kill,
        # with what it held at the first signal
        sig(100, 30, 15), ukill(100, 30, "web", 15, rss_kb=10240, swap_kb=400),
        sig(110, 30, 9), ukill(110, 30, "web", 9, rss_kb=9000),
        ev(112, "sim:exit_mm", 30, comm="web", pages=2560), exit_(112, 30, "sigterm"),
        # SIGTERM ignored: the process lives on, not a kill
        ukill(120, 40, "cron", 15, rss_kb=500),
        # kill(2) of a process already gone: not a kill
        ukill(125, 77, "", 9, result=-3),
        # cgroup.kill: every member it signalled, with what each held
        sig(130, 10, 9), sig(130, 20, 9),
        ev(130, "userspace:cgroup_kill", 5, daemon="d", path="/app", reason="", nr_tasks=2,
           members=[[10, 4000, 96], [20, 0, 0]]),
        ev(131, "userspace:mrelease", 10, daemon="d", comm="hog", result=0, pages=1000),
        exit_(132, 11, "killed"), exit_(133, 20, "killed"),
    ]
    kills = killed_processes(events)
    assert [(k.t, k.pid, k.comm, k.by, k.freed_kb) for k in kills] == [
        (100, 30, "web", "userspace", 10240 + 400),   # dated at the first signal
        (130, 10, "hog", "userspace", 4000 + 96),     # its last thread's exit counts for the process
        (130, 20, "db", "userspace", 0)]
    assert collateral(kills, "hog") == 2


def test_a_kernel_kill_after_an_ignored_or_pending_sigterm_is_the_kernels():
    def ukill(t, pid, comm, signo):
        return ev(t, "userspace:kill", pid, daemon="d", comm=comm, sig=signo, reason="", result=0,
                  rss_kb=4000, swap_kb=0)

    events = PROCS + [
        # earlyoom's SIGTERM is ignored (kill(2) still returns 0); later the kernel kills it
        ev(100, "signal:signal_generate", 10, sig=15, comm="hog", group=1, result=1), ukill(100, 10, "hog", 15),
        oom_kill(150, 10, "hog", anon_kb=5000), exit_(160, 10, "killed"),
        # a SIGTERM handler is still cleaning up when the kernel picks the process
        sig(200, 30, 15), ukill(200, 30, "web", 15),
        oom_kill(210, 30, "web", anon_kb=700), exit_(215, 30, "killed"),
    ]
    kills = killed_processes(events)
    assert [(k.t, k.pid, k.by, k.freed_kb) for k in kills] == [(150, 10, "kernel", 5000), (210, 30, "kernel", 700)]


def test_the_hog_is_the_biggest_allocator_before_the_first_kill_or_stall():
    events = PROCS + [alloc(1, 20, 100), alloc(2, 11, 60), alloc(3, 10, 60), *reclaim(4, 6, 10),
                      alloc(8, 20, 10_000)]                  # after the first stall: not counted
    assert hog(events) == "hog"                             # 120 pages over two threads beat 100
    assert hog(PROCS + [alloc(1, 30, 50), alloc(1, 20, 50)]) == "db"    # a tie: the lowest pid
    assert hog(PROCS + [*reclaim(1, 2, 10), alloc(5, 40, 7)]) == "cron"  # nothing before: whole run
    assert hog(PROCS) is None


def test_recovery_is_the_end_of_the_last_stall_or_the_kill_that_ended_them():
    stalls = reclaim(100, 110, 10) + reclaim(105, 130, 30) + [ev(140, "sim:throttle", 20, why="memcg_high",
                                                                 jiffies=25)]
    assert stall_intervals(stalls, 1000) == ([(100, 110), (105, 130), (140, 165)], False)
    assert recovery(stalls, 1000, False) == (100, 165, True)
    late_kill = Killed(200, 10, "hog", "kernel", 4)
    assert recovery(stalls, 1000, False, [late_kill]) == (100, 200, True)
    # still reclaiming when the run ended, or a panic: never recovered, flagged
    open_stall = stalls + [ev(500, "vmscan:mm_vmscan_direct_reclaim_begin", 30, order=0, gfp_flags="")]
    assert recovery(open_stall, 1000, False) == (100, 1000, False)
    assert recovery(stalls, 1000, True) == (100, 1000, False)
    # stalls until shortly before the run was cut off: not a recovery; a run that ended
    # because every task exited has nothing left to stall
    assert recovery(stalls, 200, False, quiet=50) == (100, 200, False)
    assert recovery(stalls, 200, False, quiet=50, ended_idle=True) == (100, 165, True)
    assert recovery(stalls, 215, False, quiet=50) == (100, 165, True)
    assert recovery([], 1000, False) == (None, None, True)


def test_aggregation_and_cells():
    runs = [{"kills": k, "collateral": 0, "freed_per_kill_mib": f, "pressure_to_recovery_s": p,
             "stall_some_s": 0.5, "stall_full_s": 0.25, "alloc_failures": 0, "panic": 0, "recovered": r}
            for k, f, p, r in ((1, 10.0, None, True), (3, 20.0, 2.0, False), (2, None, 4.0, True))]
    agg = aggregate(runs)
    assert agg["median"]["kills"] == 2 and agg["min"]["kills"] == 1 and agg["max"]["kills"] == 3
    assert agg["median"]["freed_per_kill_mib"] == 15.0     # over the runs that have a value
    assert agg["median"]["recovered"] == 2
    assert cell(agg, "kills") == "2 (1–3)"
    assert cell(agg, "pressure_to_recovery_s") == "3.000 (2.000–4.000)"
    assert cell(agg, "stall_some_s") == "0.500"            # every seed agrees: no range
    none = aggregate([{**runs[0], "freed_per_kill_mib": None}])
    assert cell(none, "freed_per_kill_mib") == "–"


# --- real runs ----------------------------------------------------------------------------
def test_compare_prints_a_table_and_json_that_match_direct_runs(same_runs):
    direct = {}
    cfg = load_config(QUICK)
    for spec in ("linux", "largest-rss"):
        for seed in (0, 1):
            res = sim.run(cfg, seed=seed, policy=load_policy(spec), keep_records=True)
            direct[spec, seed] = (res, summarize(res.records, seed=seed, hz=res.hz, reason=res.reason))

    out = cli("compare", QUICK, "--policy", "linux", "--policy", "largest-rss", "--seeds", "2",
              "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["seeds"] == [0, 1]
    [conf] = data["configs"]
    assert conf["config"] == QUICK
    assert [p["policy"] for p in conf["policies"]] == ["linux", "largest-rss"]
    for pol in conf["policies"]:
        assert [r["seed"] for r in pol["runs"]] == [0, 1]
        for r in pol["runs"]:
            res, summary = direct[pol["policy"], r["seed"]]
            assert r["kills"] == len(summary["kills"]) == 1
            assert [k["comm"] for k in r["killed"]] == [k["comm"] for k in summary["kills"]] == ["leaker"]
            assert r["hog"] == "leaker" and r["collateral"] == 0
            kill = next(e for e in _decoded(res) if e["event"] == "sim:oom_kill")
            assert r["freed_per_kill_mib"] == round((kill["anon_rss"] + kill["file_rss"] + kill["shmem_rss"])
                                                    / 1024, 1)
            assert r["freed_per_kill_mib"] > 1400          # the leaker held ~1.5GiB
            psi = psi_totals(res)
            assert r["stall_some_s"] == round(psi["some_us"] / 1e6, 3) > 0
            assert r["stall_full_s"] == round(psi["full_us"] / 1e6, 3)
            assert r["alloc_failures"] == summary["alloc_failures"] and r["panic"] == 0
            assert r["end_reason"] == summary["end_reason"] == "duration"
            assert r["recovered"] and r["first_pressure_s"] < r["killed"][0]["t"] <= r["recovery_s"]
            assert r["pressure_to_recovery_s"] == pytest.approx(r["recovery_s"] - r["first_pressure_s"])
        assert pol["median"]["kills"] == 1 and pol["median"]["recovered"] == 2
        lo, hi = pol["min"]["stall_some_s"], pol["max"]["stall_some_s"]
        assert lo == min(r["stall_some_s"] for r in pol["runs"]) and hi == max(r["stall_some_s"] for r in pol["runs"])

    assert len(same_runs) == 4   # compare asked for exactly these (config, seed, policy) runs
    table = cli("compare", QUICK, "--policy", "linux", "--policy", "largest-rss", "--seeds", "2")
    assert table.exit_code == 0, table.output
    text = table.stdout
    assert f"{QUICK} — seeds 0–1, hog: leaker" in text
    for head in ("kills", "collateral", "MiB freed/kill", "pressure→recovery (s)", "stall some (s)",
                 "stall full (s)", "alloc failures", "recovered", "panics", "end"):
        assert head in text
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in text.splitlines() if line.startswith("│")}
    assert set(rows) == {"linux", "largest-rss"}
    linux = conf["policies"][0]
    assert rows["linux"][:2] == ["1", "0"]
    assert rows["linux"][2] == cell(linux, "freed_per_kill_mib")
    assert rows["linux"][4] == cell(linux, "stall_some_s")
    assert rows["linux"][7:] == ["2/2", "0/2", "duration"]


def test_compare_the_kernel_and_userspace_killers_on_quickstart(same_runs):
    args = ("compare", QUICK, "--policy", "linux", "--policy", "earlyoom", "--policy", "systemd-oomd",
            "--seeds", "2")
    out = cli(*args, "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    pols = {p["policy"]: p for p in data["configs"][0]["policies"]}
    assert list(pols) == ["linux", "earlyoom", "systemd-oomd"]
    for pol in pols.values():
        for r in pol["runs"]:
            # whoever acts, the leaker dies and nobody else does
            assert [k["comm"] for k in r["killed"]] == ["leaker"] and r["hog"] == "leaker"
            assert r["collateral"] == 0 and r["recovered"] and r["panic"] == 0
            assert r["stall_some_s"] >= r["stall_full_s"] > 0
    linux, early, oomd = pols["linux"]["runs"], pols["earlyoom"]["runs"], pols["systemd-oomd"]["runs"]
    for lx, eo in zip(linux, early):
        # earlyoom SIGTERMs the leaker once MemAvailable and SwapFree are both under 10 %
        # (no swap here): before the kernel's OOM, with less memory to give back, and
        # with less stall on the way
        assert eo["userspace_kills"] == 1 and eo["kernel_kills"] == 0
        assert eo["killed"][0]["t"] < lx["killed"][0]["t"]
        assert eo["freed_per_kill_mib"] < lx["freed_per_kill_mib"]
        assert eo["stall_some_s"] < lx["stall_some_s"]
    # systemd-oomd acts only on units that ask for it, and quickstart declares none: the
    # kernel kills, as without it
    assert all(r["kernel_kills"] == 1 and r["userspace_kills"] == 0 for r in oomd)

    table = cli(*args)
    assert table.exit_code == 0, table.output
    assert len(same_runs) == 6        # the table shows the same runs as the JSON
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in table.stdout.splitlines() if line.startswith("│")}
    assert list(rows) == ["linux", "earlyoom", "systemd-oomd"]
    for name, pol in pols.items():
        assert rows[name][:7] == [cell(pol, key) for key, _head in COLUMNS]
        assert rows[name][7:] == ["2/2", "0/2", "duration"]


def test_without_policy_each_config_runs_its_own(tmp_path):
    own = tmp_path / "own.toml"
    own.write_text(Path(COLLATERAL).read_text() + '\n[policy]\nname = "youngest"\n')
    data = compare([str(own), COLLATERAL], [], [0])
    assert [[p["policy"] for p in c["policies"]] for c in data["configs"]] == [["youngest"], ["linux"]]
    assert [k["comm"] for k in data["configs"][0]["policies"][0]["runs"][0]["killed"]] == ["sidecar", "hog"]


def _decoded(res) -> list[dict]:
    from helpers import events
    return events(res)


def test_collateral_on_a_config_where_policies_kill_the_wrong_task():
    data = compare([COLLATERAL], ["linux", "largest-rss", "youngest"], [0])
    by = {p["policy"]: p["runs"][0] for p in data["configs"][0]["policies"]}
    assert {r["hog"] for r in by.values()} == {"hog"}
    assert [k["comm"] for k in by["linux"]["killed"]] == ["hog"] and by["linux"]["collateral"] == 0
    # largest-rss ignores db's -500 and kills it; the hog then fits
    assert [k["comm"] for k in by["largest-rss"]["killed"]] == ["db"] and by["largest-rss"]["collateral"] == 1
    assert by["largest-rss"]["freed_per_kill_mib"] == 600.0
    # youngest kills the sidecar first, which frees too little, then the hog
    assert [k["comm"] for k in by["youngest"]["killed"]] == ["sidecar", "hog"]
    assert by["youngest"]["collateral"] == 1 and by["youngest"]["kills"] == 2


TOY_DAEMON = '''
from policies.api import Daemon

class KillLargest(Daemon):
    name = "kill-largest"
    description = "SIGKILL the largest process when MemAvailable drops under 200 MiB"

    async def run(self, host):
        while True:
            if host.meminfo().MemAvailable < 200 * 1024:
                procs = [p for p in host.processes() if not p.kthread and p.pid not in (1, host.pid)]
                big = max(procs, key=lambda p: (p.vm_rss_kb, p.pid))
                await host.kill(big.pid, 9, "low memory")
                while host.is_alive(big.pid):
                    await host.sleep_ms(10)
            await host.sleep_ms(100)
'''


def test_a_userspace_killers_kills_are_counted_from_its_events(tmp_path, monkeypatch):
    (tmp_path / "cmp_toy_daemon.py").write_text(TOY_DAEMON)
    monkeypatch.chdir(tmp_path)
    data = compare([COLLATERAL], ["cmp_toy_daemon:KillLargest"], [0])
    [run] = data["configs"][0]["policies"][0]["runs"]
    # db is the largest process when memory runs low; the hog, which grows past it, later
    assert [(k["comm"], k["by"]) for k in run["killed"]] == [("db", "userspace"), ("hog", "userspace")]
    assert run["userspace_kills"] == 2 and run["kernel_kills"] == 0
    assert run["hog"] == "hog" and run["collateral"] == 1
    assert 600 <= run["killed"][0]["freed_mib"] < 602     # 600MiB of anon and its page tables


def test_progress_and_jobs_do_not_change_the_result():
    seen = []
    one = compare([QUICK], ["linux"], [0, 1], progress=lambda done, total, job: seen.append((done, total, job.seed)))
    assert seen == [(0, 2, 0), (1, 2, 1), (2, 2, 1)]
    assert compare([QUICK], ["linux"], [0, 1], jobs=2) == one


# --- bad input ----------------------------------------------------------------------------
BROKEN = '''
from policies.api import KillPolicy

class Raises(KillPolicy):
    name = "raises"
    def select(self, ctx):
        raise RuntimeError("no idea")
'''


def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch):
    res = cli("compare", QUICK, "--policy", "linux", "--policy", "nope")
    assert res.exit_code == 2
    assert res.output.startswith("oomactors: error: unknown policy 'nope' (available: ")
    assert res.output.count("\n") == 1

    res = cli("compare", QUICK, str(tmp_path / "missing.toml"))
    assert res.exit_code == 2
    missing = tmp_path / "missing.toml"
    assert res.output == f"oomactors: error: {missing}: cannot read config: No such file or directory\n"

    bad = tmp_path / "bad.toml"
    bad.write_text('[policy]\nname = "lmk-adj-levels"\nminfree = [1, 2]\nadj = [0]\n')
    res = cli("compare", str(bad), "--policy", "lmk-adj-levels")
    assert res.exit_code == 2 and "policy: minfree has 2 levels but adj has 1" in res.output
    assert res.output.count("\n") == 1

    (tmp_path / "cmp_broken.py").write_text(BROKEN)
    monkeypatch.chdir(tmp_path)
    res = cli("compare", QUICK, "--policy", "linux", "--policy", "cmp_broken:Raises", "--seeds", "1")
    assert res.exit_code == 2
    assert res.output == (f"oomactors: error: {QUICK}, seed 0: policy 'raises' raised "
                          "RuntimeError: no idea\n")


def test_run_metrics_reads_a_trace_read_back_from_disk(tmp_path):
    from oomactors.report import EventTable
    from oomactors.trace.stream import TraceWriter, read_trace
    cfg = load_config(QUICK)
    path = tmp_path / "q.trace"
    writer = TraceWriter(str(path), seed=0, hz=cfg.kernel.hz, config=cfg.as_dict())
    try:
        res = sim.run(cfg, seed=0, sinks=[writer.write], keep_records=True)
    finally:
        writer.close()
    live = run_metrics(res.records, hz=res.hz, seed=0, psi_source=res)
    tr = read_trace(path)
    recs = list(tr.records())
    again = run_metrics(recs, hz=tr.hz, seed=0, table=EventTable(tr.names, tr.fields))
    # everything but the PSI totals comes from the events alone
    for key in ("kills", "killed", "hog", "collateral", "freed_per_kill_mib", "first_pressure_s", "recovery_s",
                "recovered", "alloc_failures", "panic", "end_reason"):
        assert again[key] == live[key], key
