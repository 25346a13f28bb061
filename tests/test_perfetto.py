"""The Perfetto export, read back with the perfetto package's own protos: the process
tree, the per-CPU sched_switch stream, the task state slices, the counters, the kill
instants and their flows, with values checked against the run's own events."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as P

import oomactors
from oomactors.cli import main
from oomactors.export.perfetto import EXIT_DEAD, TASK_UNINTERRUPTIBLE


ROOT = Path(__file__).resolve().parent.parent
MEMCG = ROOT / "tests/data/observe-memcg.toml"
NS = 4_000_000           # one jiffy at HZ=250
MB = 1024 * 1024


class Read:
    """A .pftrace decoded into what the tests look at."""

    def __init__(self, path: Path) -> None:
        trace = P.Trace()
        trace.ParseFromString(path.read_bytes())
        self.packets = list(trace.packet)
        self.tracks = {p.track_descriptor.uuid: p.track_descriptor for p in self.packets
                       if p.HasField("track_descriptor")}
        self.ftrace = [(p.ftrace_events.cpu, e) for p in self.packets if p.HasField("ftrace_events")
                       for e in p.ftrace_events.event]
        self.events = [(p.timestamp, p.track_event) for p in self.packets if p.HasField("track_event")]
        self.events.sort(key=lambda x: x[0])

    def ftrace_of(self, kind: str) -> list:
        return [(cpu, e) for cpu, e in self.ftrace if e.WhichOneof("event") == kind]

    def track(self, name: str | None = None, tid: int | None = None) -> int:
        for uuid, d in self.tracks.items():
            if (name is not None and d.name == name) or (tid is not None and d.HasField("thread")
                                                         and d.thread.tid == tid):
                return uuid
        raise KeyError(name or tid)

    def slices(self, uuid: int) -> list[tuple[str, int, int, int]]:
        """(name, begin, end, depth) of every slice on a track; asserts they nest."""
        out, stack = [], []
        for ts, te in self.events:
            if te.track_uuid != uuid:
                continue
            if te.type == P.TrackEvent.TYPE_SLICE_BEGIN:
                stack.append((te.name, ts))
            elif te.type == P.TrackEvent.TYPE_SLICE_END:
                name, begin = stack.pop()
                assert ts >= begin
                out.append((name, begin, ts, len(stack)))
        assert not stack, f"unclosed slices {stack}"
        return out

    def counter(self, name: str) -> list[tuple[int, float]]:
        uuid = self.track(name)
        return [(ts, te.counter_value or te.double_counter_value) for ts, te in self.events
                if te.track_uuid == uuid and te.type == P.TrackEvent.TYPE_COUNTER]

    def meminfo(self, key: int) -> list[tuple[int, int]]:
        return [(p.timestamp, v.value) for p in self.packets if p.HasField("sys_stats")
                for v in p.sys_stats.meminfo if v.key == key]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    d = tmp_path_factory.mktemp("pf")
    run = oomactors.run(seed=3, trace=d / "seed3.trace")
    run.export(d / "seed3.pftrace")
    return run, Read(d / "seed3.pftrace")


@pytest.fixture(scope="module")
def memcg(tmp_path_factory):
    d = tmp_path_factory.mktemp("pfm")
    run = oomactors.run(MEMCG, seed=1)
    run.export(d / "memcg.pftrace")
    return run, Read(d / "memcg.pftrace")


def victim_exit(run) -> int:
    """The leaker's exit, in ns (at the start of its jiffy)."""
    (t,) = run.frame("sched:sched_process_exit").query("pid == 9")["t"]
    return round(t * 250) * NS


def jiffy_of(ts: int) -> int:
    return ts // NS


def test_system_info_and_process_tree(quick):
    run, pf = quick
    (info,) = [p.system_info for p in pf.packets if p.HasField("system_info")]
    start = run.frame("sim:run_start").iloc[0]
    assert (info.hz, info.num_cpus, info.page_size) == (250, 4, 4096)
    assert info.system_ram_bytes == start["total_pages"] * 4096
    assert (info.utsname.sysname, info.utsname.release) == ("Linux", "5.10.0")   # profile linux-5.10
    procs = {p.pid: p for pkt in pf.packets if pkt.HasField("process_tree") for p in pkt.process_tree.processes}
    assert list(procs[9].cmdline) == ["leaker"] and procs[1].cmdline[0] == "init"
    threads = {t.tid: t.name for pkt in pf.packets if pkt.HasField("process_tree") for t in pkt.process_tree.threads}
    assert threads[9] == "leaker"
    assert set(threads) == set(run.frame("sim:task_new")["pid"])


def test_sched_switch_per_cpu_is_the_runs(quick):
    run, pf = quick
    ours = run.frame("sched:sched_switch")
    theirs = pf.ftrace_of("sched_switch")
    assert len(theirs) == len(ours)
    got = sorted((e.timestamp, cpu, e.sched_switch.prev_pid, e.sched_switch.next_pid) for cpu, e in theirs)
    want = sorted(zip((ours["t"] * 250).round().astype(int), ours["cpu"], ours["prev_pid"], ours["next_pid"]))
    assert sorted((jiffy_of(ts), c, a, b) for ts, c, a, b in got) == [tuple(map(int, w)) for w in want]
    # a slice per task while it runs: on each CPU a task leaves before the next one comes
    running: dict[int, int] = {}
    busy: dict[int, int] = defaultdict(int)
    for ts, cpu, prev, nxt in got:
        assert running.get(cpu, 0) in (0, prev)
        if prev:
            busy[prev] += 1
        running[cpu] = nxt
    assert busy[9] > 10                                   # the leaker ran many times
    assert any(nxt == 0 for _ts, _c, _p, nxt in got)     # CPUs go idle
    names = {e.sched_switch.next_comm for _c, e in theirs}
    assert {"leaker", "swapper/0"} <= names
    # a task that sleeps in D state leaves its CPU as TASK_UNINTERRUPTIBLE, a dead one as X
    assert any(e.sched_switch.prev_state == TASK_UNINTERRUPTIBLE for _c, e in theirs)
    (last,) = [e for _c, e in theirs if e.sched_switch.prev_pid == 9][-1:]
    assert last.sched_switch.prev_state == EXIT_DEAD and last.timestamp >= victim_exit(run)


def test_timestamps_are_virtual_time_in_order(quick):
    run, pf = quick
    (victim,) = pf.ftrace_of("mark_victim")
    (t,) = run.frame("oom:mark_victim")["t"]
    assert jiffy_of(victim[1].timestamp) == round(t * 250)
    assert victim[1].mark_victim.pid == 9
    for cpu in {c for c, _e in pf.ftrace}:
        stamps = [e.timestamp for c, e in pf.ftrace if c == cpu]
        assert stamps == sorted(stamps)


def test_task_state_slices(quick):
    run, pf = quick
    leaker = pf.track(tid=9)
    assert pf.tracks[leaker].thread.thread_name == "leaker"
    slices = pf.slices(leaker)
    names = {s[0] for s in slices}
    assert {"fast path", "slow path", "direct reclaim", "out_of_memory"} <= names
    ev = run.events
    mine = ev[ev["pid"] == 9]
    assert sum(s[0] == "slow path" for s in slices) == (mine["event"] == "sim:slowpath_enter").sum()
    assert sum(s[0] == "direct reclaim" for s in slices) == (
        mine["event"] == "vmscan:mm_vmscan_direct_reclaim_begin").sum()
    (oom,) = [s for s in slices if s[0] == "out_of_memory"]
    enter = mine.loc[mine["event"] == "sim:out_of_memory_enter", "t"].iloc[0]
    ret = mine.loc[mine["event"] == "sim:out_of_memory_return", "t"].iloc[0]
    assert (jiffy_of(oom[1]), jiffy_of(oom[2])) == (round(enter * 250), round(ret * 250))
    assert oom[3] >= 1                                   # inside the slow path
    slow = [s for s in slices if s[0] == "slow path" and s[1] <= oom[1] <= s[2]]
    assert len(slow) == 1
    # io waits (here kswapd's and the other reclaimers') last the jiffies their events carry
    ios = sorted((d.thread.tid, jiffy_of(b), jiffy_of(e) - jiffy_of(b)) for uuid, d in pf.tracks.items()
                 if d.HasField("thread") for n, b, e, _dep in pf.slices(uuid) if n.startswith("D: io_wait"))
    waits = ev[ev["event"] == "sim:io_wait"]
    assert len(ios) == len(waits) > 10
    assert ios == sorted(zip(waits["pid"], (waits["t"] * 250).round().astype(int), waits["jiffies"]))
    fate = pf.slices(pf.track(name="leaker 9 fate"))
    assert [s[0] for s in sorted(fate, key=lambda s: s[1])] == ["dying", "reaped"]
    reaper = run.frame("sim:task_new").query("comm == 'oom_reaper'")["pid"].iloc[0]
    assert [s[0] for s in pf.slices(pf.track(tid=reaper))] == ["reaping 9"]


def test_every_track_nests(quick, memcg):
    for _run, pf in (quick, memcg):
        for uuid in pf.tracks:
            pf.slices(uuid)


def test_counters(quick):
    run, pf = quick
    zones = run.zoneinfo()
    normal = zones[zones["zone"] == "0:Normal"]
    for key in ("free", "min", "low", "high"):
        values = [v for _ts, v in pf.counter(f"zone 0:Normal {key}")]
        assert values == [x * 4096 for x in normal[key]]
    assert pf.tracks[pf.track("zone 0:Normal free")].counter.unit == P.CounterDescriptor.UNIT_SIZE_BYTES
    mem = run.meminfo()
    M = P.MeminfoCounters
    free = pf.meminfo(M.MEMINFO_MEM_FREE)
    assert [v for _ts, v in free] == [(a + b) * 4 for a, b in zip(mem["free"], mem["free_pcp"])]
    assert [jiffy_of(ts) for ts, _v in free] == [round(t * 250) for t in mem.index]
    assert [v for _ts, v in pf.meminfo(M.MEMINFO_ANON_PAGES)] == [a * 4 for a in mem["anon"]]
    assert [v for _ts, v in pf.meminfo(M.MEMINFO_CACHED)] == [(a + b) * 4 for a, b in zip(mem["file"], mem["shmem"])]
    commit = run.commit()
    assert [v for _ts, v in pf.meminfo(M.MEMINFO_COMMITED_AS)] == [c * 4 for c in commit["committed_as"]]
    rss = pf.ftrace_of("rss_stat")
    ours = run.frame("kmem:rss_stat")
    assert len(rss) == len(ours)
    leaker = [e for _c, e in rss if e.pid == 9 and e.rss_stat.member == 1]
    assert max(e.rss_stat.size for e in leaker) == ours.query("pid == 9 and member == 1")["size"].max()
    assert all(e.rss_stat.curr == 1 for _c, e in rss)


def test_memcg_and_psi_counters(memcg):
    run, pf = memcg
    mc = run.memcg().query("path == '/box'")
    assert [v for _ts, v in pf.counter("memcg /box usage")] == [u * 4096 for u in mc["usage"]]
    assert {v for _ts, v in pf.counter("memcg /box max")} == {100 * MB}
    assert {v for _ts, v in pf.counter("memcg /box high")} == {95 * MB}
    with pytest.raises(KeyError):
        pf.track("memcg / max")                           # unlimited: no line at 2^63 pages
    psi = run.psi("/box")
    assert [v for _ts, v in pf.counter("PSI memory /box some avg10")] == pytest.approx(list(psi["some_avg10"]))
    assert pf.tracks[pf.track("PSI memory /box some avg10")].counter.unit_name == "%"
    root = run.psi("/")
    totals = [s.total_ns for p in pf.packets if p.HasField("sys_stats") for s in p.sys_stats.psi
              if s.resource == P.SysStats.PsiSample.PSI_RESOURCE_MEMORY_SOME]
    assert totals == [round(x * 1e9) for x in root["some_total"]]
    hog = pf.track(tid=run.frame("sim:task_new").query("comm == 'hog'")["pid"].iloc[0])
    names = {s[0] for s in pf.slices(hog)}
    assert {"memcg reclaim", "out_of_memory"} <= names


def test_kill_instants_and_flows(quick):
    run, pf = quick
    oom = pf.track(name="OOM")
    instants = [(ts, te) for ts, te in pf.events if te.track_uuid == oom and te.type == P.TrackEvent.TYPE_INSTANT]
    kills = [(ts, te) for ts, te in instants if te.name.startswith("oom-kill")]
    assert [te.name for _ts, te in kills] == ["oom-kill leaker (9)"]
    ts, kill = kills[0]
    args = {a.name: (a.int_value if a.HasField("int_value") else a.string_value) for a in kill.debug_annotations}
    k = run.kills.iloc[0]
    assert (args["victim"], args["pid"], args["points"], args["constraint"]) == ("leaker", 9, k["points"],
                                                                                  "CONSTRAINT_NONE")
    assert jiffy_of(ts) == round(k["t"] * 250)
    assert any(te.name.startswith("out_of_memory by leaker") for _ts, te in instants)
    assert any(te.name.startswith("reaped leaker (9)") for _ts, te in instants)
    (flow,) = kill.flow_ids
    linked = [(ts, pf.tracks[te.track_uuid], te.name) for ts, te in pf.events if flow in te.flow_ids]
    where = [(d.thread.tid if d.HasField("thread") else d.name, name) for _ts, d, name in linked]
    assert (9, "oom-kill leaker (9)") in where            # the allocating task (it was the leaker itself)
    assert ("OOM", "oom-kill leaker (9)") in where
    assert ("leaker 9 fate", "exit (killed)") in where
    reaper = run.frame("sim:task_new").query("comm == 'oom_reaper'")["pid"].iloc[0]
    assert (reaper, "reaping 9") in where
    assert linked[0][0] == ts                             # the flow starts at the kill


def test_run_perfetto_matches_trace_export(tmp_path):
    trace, a, b = tmp_path / "r.trace", tmp_path / "a.pftrace", tmp_path / "b.pftrace"
    res = CliRunner().invoke(main, ["run", "--seed", "3", "--trace", str(trace), "--perfetto", str(a), "--json"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["trace", "export", str(trace), "-o", str(b)])
    assert res.exit_code == 0, res.output
    assert a.read_bytes() == b.read_bytes() and len(a.read_bytes()) > 10_000
    # without --trace the run's trace is a temporary file
    c = tmp_path / "c.pftrace"
    res = CliRunner().invoke(main, ["run", "--seed", "3", "--perfetto", str(c), "--json"])
    assert res.exit_code == 0 and c.read_bytes() == a.read_bytes()
    res = CliRunner().invoke(main, ["run", "--seed", "3", "--perfetto", str(tmp_path / "no" / "x.pftrace")])
    assert res.exit_code == 2 and res.output.startswith("oomactors: error: ") and "cannot write" in res.output
    # a run that never starts (bad config) leaves no empty file behind
    d = tmp_path / "d.pftrace"
    res = CliRunner().invoke(main, ["run", str(tmp_path / "missing.toml"), "--perfetto", str(d)])
    assert res.exit_code == 2 and "cannot read config" in res.output and not d.exists()


def test_backoff_and_compaction_states(tmp_path):
    """parallel-oom: tasks that lose the oom_lock trylock back off one jiffy; costly-order:
    high-order requests compact."""
    for cfg, state, event in (("parallel-oom.toml", "oom_lock back-off", "sim:oom_lock_contended"),
                              ("costly-order.toml", "compaction", "compaction:mm_compaction_try_to_compact_pages")):
        run = oomactors.run(ROOT / "configs" / cfg, duration="20s")
        run.export(tmp_path / "x.pftrace")
        pf = Read(tmp_path / "x.pftrace")
        got = sorted((d.thread.tid, jiffy_of(b)) for uuid, d in pf.tracks.items() if d.HasField("thread")
                     for name, b, _e, _dep in pf.slices(uuid) if name == state)
        ev = run.frame(event)
        assert got == sorted(zip(ev["pid"], (ev["t"] * 250).round().astype(int))) and len(got) > 5
        if state == "oom_lock back-off":        # an uninterruptible one-jiffy sleep
            spans = {jiffy_of(e) - jiffy_of(b) for uuid, d in pf.tracks.items() if d.HasField("thread")
                     for name, b, e, _dep in pf.slices(uuid) if name == state}
            assert spans == {1}


def test_task_state_rules_on_hand_made_events():
    """The rules for states without an end event of their own (oomactors/export/task_states.py)."""
    from oomactors.export.task_states import TaskStates

    out = []
    st = TaskStates(out.append, jiffy=10)

    def ev(ts, name, pid, **fields):
        st.feed(ts, {"event": name, "pid": pid, "cpu": 0, **fields})

    ev(0, "sim:task_new", 7, comm="x", kthread=0, tgid=7)
    ev(1, "sim:oom_lock_contended", 7)                     # outside the slow path: memcg wait
    ev(2, "sched:sched_switch", 0, prev_pid=7, next_pid=0)  # it sleeps on the mutex
    ev(3, "oom:mark_victim", 7)                            # another task's doing: no change
    ev(9, "sched:sched_switch", 0, prev_pid=0, next_pid=7)  # woken: the wait is over
    ev(10, "sim:step", 7, op="alloc", pages=4)             # fast path ...
    ev(11, "sched:sched_switch", 0, prev_pid=7, next_pid=0)  # ... ends when it leaves the CPU
    ev(12, "sim:slowpath_enter", 7, order=0, gfp_flags="0x0")
    ev(13, "sim:oom_lock_contended", 7)                    # in the slow path: a 1-jiffy back-off
    ev(19, "sim:io_wait", 7, pages=1, jiffies=5, why="reclaim")  # the task acts: back-off over
    ev(40, "sim:mmap_lock", 7, op="wait_read")
    ev(41, "sim:slowpath_exit", 7, order=0, result="ok", loops=1)
    st.finish(50)
    spans = [(s.name, s.ts, "end" if s.end else "begin") for s in out]
    assert spans == [
        ("waiting for oom_lock", 1, "begin"),
        ("dying", 3, "begin"),                              # on the fate track
        ("waiting for oom_lock", 9, "end"),
        ("fast path", 10, "begin"), ("fast path", 11, "end"),
        ("slow path", 12, "begin"),
        ("oom_lock back-off", 13, "begin"), ("oom_lock back-off", 19, "end"),
        ("D: io_wait (reclaim)", 19, "begin"),
        ("D: io_wait (reclaim)", 40, "end"),                # the task acted before its timer (69)
        ("D: mmap_lock", 40, "begin"), ("D: mmap_lock", 41, "end"),
        ("slow path", 41, "end"),
        ("dying", 50, "end")]
    assert {s.track for s in out if s.name == "dying"} == {"fate"}


def test_a_userspace_kill_flows_to_the_victims_exit(tmp_path):
    run = oomactors.run(ROOT / "configs" / "userspace-oomd.toml", duration="20s")
    run.export(tmp_path / "u.pftrace")
    pf = Read(tmp_path / "u.pftrace")
    (victim,) = run.kills.query("by == 'userspace'")["pid"]
    comm = run.kills["comm"].iloc[0]
    kills = [te for _ts, te in pf.events if te.name == f"oomd: kill {comm} ({victim})"]
    assert kills and all(len(te.flow_ids) == 1 for te in kills)
    flow = kills[0].flow_ids[0]
    (exit_,) = [te for _ts, te in pf.events if te.name.startswith("exit (") and flow in te.flow_ids]
    assert pf.tracks[exit_.track_uuid].name == f"{comm} {victim} fate"
