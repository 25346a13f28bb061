"""Every speed shortcut of the engine claims to be pure: the same events, the same machine
state and the same trace bytes as the slow path it stands for (issue 9: "where an
optimisation would change what the kernel would do, it is wrong").  The digest tests of
each shortcut compare a few shipped configs; here small random machines -- several nodes,
memcg limits and protection, cpusets changing mid-run, mempolicies, little or no swap,
odd chunk sizes, per-CPU batches and drifts, every HZ, other kernel profiles, a random
scheduler -- are run with every shortcut on and with every one off, and must agree event
for event and state for state.  Ctrl-C landing inside a run of empty reclaim passes, and
whole explore searches, are compared the same way.
"""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from test_fault_batch import _state

import oomactors.actors.user as user
from oomactors import interrupt, machine, schedule, sim
from oomactors.config import load_config, parse_config
from oomactors.errors import ConfigError
from oomactors.events import EVENT_ID
from oomactors.explore import explore
from oomactors.kernel import oom_select, page_alloc, page_alloc_pcp, vmscan, vmscan_empty

NODE_RECLAIM = EVENT_ID["vmscan:mm_vmscan_node_reclaim"]


def _zones(ac) -> tuple:
    """AllocContext.zones without its cache."""
    hz, nm = ac.highest_zoneidx, ac.nodemask
    return tuple(z for z in ac.zonelist if z.idx <= hz and (nm is None or z.node.nid in nm))


def _nodes(ac) -> tuple:
    """AllocContext.nodes without its cache."""
    return tuple(dict.fromkeys(z.node for z in _zones(ac)))


def _anchoring_counts_every_point(self, inner) -> None:
    real_anchoring_init(self, inner)
    self.only = None


real_anchoring_init = schedule.Anchoring.__init__


def slow_paths(monkeypatch) -> None:
    """Turn every shortcut off: the slow path each one claims to equal."""
    monkeypatch.setattr(vmscan, "empty_passes", lambda *a: 0)                # empty passes one by one
    monkeypatch.setattr(user, "fault_chunks_nowait", lambda *a: 0)           # faults one at a time
    monkeypatch.setattr(page_alloc_pcp, "STRETCHES", False)                  # (and, batched, walked)
    monkeypatch.setattr(machine, "_appends_only", lambda sinks: False)       # no run handed over at once
    monkeypatch.setattr(page_alloc.AllocContext, "zones", _zones)            # zonelists walked each time
    monkeypatch.setattr(page_alloc.AllocContext, "nodes", _nodes)
    monkeypatch.setattr(schedule.Anchoring, "__init__", _anchoring_counts_every_point)
    monkeypatch.setattr(machine.Machine, "fast_switches", lambda m: None)   # sched_switch via emit_switch
    monkeypatch.setattr(oom_select, "kernel_loop_profile", lambda m, policy: None)  # a view per candidate


def outcome(cfg, seed: int, scheduler_seed: int | None, probe: bool, monkeypatch, slow: bool) -> tuple:
    """A run's every event and the machine's state at its end.  ``probe``: a sink that also
    reads the state at every event (so runs of events go one by one); else only collecting
    sinks (a list, a bounded deque: runs of events are handed over at once) and a checker of
    another kind."""
    if slow:
        slow_paths(monkeypatch)
    box = {}
    real_build = sim.build

    def build(*a, **kw):
        box["m"] = real_build(*a, **kw)
        return box["m"]

    monkeypatch.setattr(sim, "build", build)
    seen: list = []
    if probe:
        def sink(rec):
            cur = box["m"].sched.current
            seen.append((rec, _state(box["m"]), None if cur is None else (cur.pid, cur.cpu_ns, cur.cpu_debt_ns)))
        sinks = [sink]
    else:
        tail: deque = deque(maxlen=50)
        sinks = [tail.append]
    kills: list = []

    def check(m, rec):
        kills.append(rec)

    check.event_ids = frozenset({EVENT_ID["sim:oom_kill"]})
    sched = None if scheduler_seed is None else schedule.RandomScheduler(scheduler_seed, p=0.02, hz=cfg.kernel.hz)
    try:
        r = sim.run(cfg, seed=seed, keep_records=True, sinks=sinks, checkers=[check], scheduler=sched,
                    env_checks=False)
    finally:
        monkeypatch.undo()
    m = box["m"]
    return (r.records, seen if probe else list(tail), kills, _state(m), sorted(m.vmstat.items()), m.nevents,
            r.end_jiffies, r.reason, r.decisions, r.schedule.dumps())


@st.composite
def machines(draw) -> str:
    """A small machine under memory pressure, as a config text."""
    pick = lambda *xs: draw(st.sampled_from(xs))  # noqa: E731
    nodes = pick(1, 1, 2, 3)
    text = [f"[machine]\ncpus = {draw(st.integers(1, 4))}\nnodes = {nodes}\nmemory = \"{pick(48, 64, 128)}MiB\"",
            f"swap = \"{pick(0, 0, 4, 16)}MiB\"\npage_cache = \"{pick(0, 2, 8)}MiB\"\ndirty = \"{pick(0, 1)}MiB\"",
            # the dentry/inode caches: passes over empty lists that only defer the shrinker's work
            f"slab_reclaimable = \"{pick('auto', 'auto', '0', '128KiB', '2MiB')}\"",
            f"fragmentation = {pick(0.0, 0.0, 0.5)}",
            f"[kernel]\nprofile = \"{pick('linux-5.10', 'linux-5.10', 'linux-2.4', 'linux-4.14', 'linux-6.12')}\"",
            f"hz = {pick(100, 250, 300, 1000)}\npcp_batch = {pick(1, 7, 31, 32, 33, 64, 600)}",
            f"percpu_drift = {pick(0, 1, 32, 100)}\npcp_high = {pick(0, 186, 1000)}\ntime_slice = \"{pick('1ms', '12ms')}\"",
            f"[run]\nduration = \"{pick('300ms', '1s')}\"\nstop_when_idle = {pick('true', 'false')}",
            f"meminfo_interval = \"{pick('0s', '200ms')}\"\npsi_samples = \"{pick('0s', '0s', '100ms')}\""]
    memcgs = []
    if draw(st.booleans()):
        for path in ["/A", "/A/B", "/C"][:draw(st.integers(1, 3))]:
            memcgs.append(path)
            text.append(f"[[memcgs]]\npath = \"{path}\"")
            if draw(st.booleans()):
                text.append(f"max = \"{pick(8, 16, 32)}MiB\"")
            if draw(st.booleans()):
                text.append(f"high = \"{pick(4, 12)}MiB\"")
            for key in ("min", "low"):
                if draw(st.booleans()):
                    text.append(f"{key} = \"{pick(2, 8)}MiB\"")
    some_nodes = st.sets(st.integers(0, nodes - 1), min_size=1).map(sorted)
    cpusets = []
    if nodes > 1 and draw(st.booleans()):
        for name in ["a", "b"][:draw(st.integers(1, 2))]:
            cpusets.append(name)
            text.append(f"[[cpusets]]\nname = \"{name}\"\nmems = {draw(some_nodes)}\nmem_hardwall = {pick('true', 'false')}")
        if draw(st.booleans()):  # cpuset_updater moves the mems mid-run
            text.append(f"[[cpuset_updates]]\nat = \"{pick('10ms', '100ms', '400ms')}\"\ncpuset = \"a\"\n"
                        f"mems = {draw(some_nodes)}")
    for i in range(draw(st.integers(1, 4))):
        steps = []
        for _ in range(draw(st.integers(1, 4))):
            kind = pick("anon", "anon", "shmem", "kernel")
            step = (f"{{ op = \"alloc\", size = \"{pick(64, 256, 1000, 4096, 16384, 65536)}KiB\", kind = \"{kind}\", "
                    f"chunk = {pick(1, 5, 7, 31, 32, 33, 64, 512, 600, 4096)}, "
                    f"gfp = \"{pick('GFP_KERNEL', 'GFP_NOFS') if kind == 'kernel' else 'GFP_HIGHUSER_MOVABLE'}\", "
                    f"on_fail = \"{pick('exit', 'retry', 'continue')}\"")
            if draw(st.integers(0, 5)) == 0:
                step += f", order = {pick(1, 3)}"
            rate = pick(None, None, "4MiB/s", "64MiB/s", "1GiB/s")
            steps.append(step + (f", rate = \"{rate}\" }}" if rate else " }"))
            if draw(st.booleans()):
                steps.append(pick('{ op = "free", size = "all" }', '{ op = "compute", time = "3ms" }',
                                  '{ op = "sleep", time = "20ms" }', '{ op = "touch_file", size = "1MiB" }',
                                  '{ op = "block", time = "30ms", hold_mmap_lock = true }',
                                  '{ op = "write", size = "256KiB" }',
                                  '{ op = "access", size = "2MiB", kind = "anon", repeat = 2 }',
                                  '{ op = "fork", program = [ { op = "alloc", size = "2MiB", chunk = 31 }, '
                                  '{ op = "exit" } ] }'))
        program = ", ".join(steps)
        if draw(st.booleans()):
            program = f"{{ op = \"repeat\", steps = [ {program} ] }}"
        text.append(f"[[tasks]]\nname = \"t{i}\"\ncount = {draw(st.integers(1, 3))}\nthreads = {pick(1, 1, 2, 3)}\n"
                    f"start = \"{pick('0s', '5ms', '50ms')}\"\nprogram = [ {program} ]")
        if memcgs and draw(st.booleans()):
            text.append(f"memcg = \"{pick(*memcgs)}\"")
        if cpusets and draw(st.booleans()):
            text.append(f"cpuset = \"{pick(*cpusets)}\"")
        if nodes > 1 and draw(st.integers(0, 3)) == 0:
            mode = pick("bind", "preferred", "interleave")
            mems = draw(some_nodes)
            text.append(f"mempolicy = {{ mode = \"{mode}\", nodes = {mems[:1] if mode == 'preferred' else mems} }}")
        if draw(st.integers(0, 4)) == 0:
            text.append(f"oom_score_adj = {pick(-1000, 500, 1000)}")
    return "\n".join(text) + "\n"


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=machines(), seed=st.integers(0, 3), scheduler_seed=st.sampled_from([None, None, 3, 11]),
       probe=st.booleans())
def test_every_shortcut_off_changes_nothing(text, seed, scheduler_seed, probe):
    try:
        cfg = parse_config(text, "<random machine>")
    except ConfigError:  # a mempolicy outside its cpuset, say
        reject()
    with pytest.MonkeyPatch.context() as mp:
        fast = outcome(cfg, seed, scheduler_seed, probe, mp, slow=False)
        slow = outcome(cfg, seed, scheduler_seed, probe, mp, slow=True)
    assert fast == slow, text


# parallel-oom without page cache: the lists are empty from the start and only the slab
# (8 MiB, floor 2 MiB) gives reclaim work -- most passes only defer the shrinker's
SLAB_ONLY = open("configs/parallel-oom.toml").read().replace('page_cache = "32MiB"', 'page_cache = "0"', 1)


def priority_off_by_one(monkeypatch) -> None:
    """A deliberate bug: the deferring passes' arithmetic one priority off."""
    real = vmscan_empty.deferred_only
    monkeypatch.setattr(vmscan_empty, "deferred_only", lambda d, f, p, g: real(d, f, p - 1, g))


def one_pass_too_many(monkeypatch) -> None:
    """A deliberate bug: each run of deferring passes takes one more pass, the first that
    would scan, as if it only deferred."""
    real_passes, real = vmscan_empty._deferring_passes, vmscan_empty.deferred_only
    late = [False]

    def passes(*a):
        late[0] = True
        return real_passes(*a)

    def deferred_only(d, f, p, g):
        got = real(d, f, p, g)
        if got is None and late[0]:
            late[0] = False
            return d + (f >> p) * 2
        return got

    monkeypatch.setattr(vmscan_empty, "_deferring_passes", passes)
    monkeypatch.setattr(vmscan_empty, "deferred_only", deferred_only)


@pytest.mark.parametrize("mutation", [None, priority_off_by_one, one_pass_too_many])
@pytest.mark.parametrize("probe", [False, True])
def test_the_comparison_sees_an_off_by_one_in_the_deferring_passes(mutation, probe):
    """The on/off comparison above is strong enough for the passes that only defer the
    shrinker's work: with the shortcut as written the two agree; with either off-by-one
    they do not (the events, the state at the end or at every event)."""
    cfg = parse_config(SLAB_ONLY, "<slab only>")
    with pytest.MonkeyPatch.context() as mp:
        if mutation is not None:
            mutation(mp)
        fast = outcome(cfg, 0, None, probe, mp, slow=False)
        slow = outcome(cfg, 0, None, probe, mp, slow=True)
    assert (fast == slow) == (mutation is None)


TWO_NODES = open("configs/parallel-oom.toml").read().replace("[machine]\n", "[machine]\nnodes = 2\n", 1)


@pytest.mark.parametrize("nodes", [1, 2])
@pytest.mark.parametrize("k", [1, 2, 5, 40, 333, 2500])
def test_ctrl_c_inside_a_run_of_empty_passes(nodes, k, monkeypatch):
    """Ctrl-C asked while direct reclaim makes its empty passes (here by the sink, at the
    k-th mm_vmscan_node_reclaim, most of which come in runs): the run ends there, with no
    event after it but its end mark, as when every pass is made one at a time."""
    cfg = parse_config(TWO_NODES if nodes == 2 else open("configs/parallel-oom.toml").read())

    def run(slow: bool):
        if slow:
            slow_paths(monkeypatch)
        got, seen = [], [0]

        def sink(rec):
            got.append(rec)
            if rec[1] == NODE_RECLAIM:
                seen[0] += 1
                if seen[0] == k:
                    interrupt.request()

        try:
            r = sim.run(cfg, seed=0, sinks=[sink], env_checks=False)
        finally:
            interrupt.clear()
            monkeypatch.undo()
        return got, r.reason, r.end_jiffies

    fast, slow = run(False), run(True)
    assert fast == slow
    records, reason, _ = fast
    assert reason == "interrupted"
    at = [i for i, rec in enumerate(records) if rec[1] == NODE_RECLAIM][k - 1]
    assert [rec[1] for rec in records[at + 1:]] == [EVENT_ID["sim:run_end"]]
    assert records[-1][4:] == ("interrupted",)


@pytest.mark.parametrize("race,scheduler,vary", [
    (race, scheduler, vary) for race in ("oom_lock", "pending_victim_abort", "cpuset_retry")
    for scheduler, vary in (("random", True), ("random", False), ("pct", False), ("exhaustive", False))
] + [(None, "random", True)])
def test_explore_finds_the_same_with_every_shortcut_off(race, scheduler, vary, monkeypatch):
    """A whole search -- its runs, coverage, the violation found and its shrunk schedule --
    is the same with every shortcut off (a race config with its fix off; parallel-oom)."""
    from test_races import _race

    path, check = _race(race) if race else ("configs/parallel-oom.toml", "single_pending_victim")
    cfg = load_config(path)

    def search(slow: bool):
        if slow:
            slow_paths(monkeypatch)
        try:
            r = explore(cfg, [check], scheduler=scheduler, budget=10, seed=3, vary_seed=vary, shrink_budget=20)
        finally:
            monkeypatch.undo()
        got = r.as_json()
        got.pop("seconds")
        return got, r.coverage, r.found_schedule and r.found_schedule.dumps()

    assert search(False) == search(True)
