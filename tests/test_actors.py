"""Actors: kswapd's wake/balance/sleep cycle and its hopeless state, CPU exclusivity,
and the asyncio backend running the same model."""

from __future__ import annotations

from oomactors import sim
from oomactors.config import parse_config
from oomactors.invariants import default_checkers
from oomactors.kernel.mmzone import MAX_RECLAIM_RETRIES
from oomactors.report import EventTable

TABLE = EventTable()


def _events(result, name):
    eid = TABLE.ids[name]
    return [TABLE.decode(r, result.hz) for r in result.records if r[1] == eid]


def one_task_per_cpu(m, rec):
    """At most one task per CPU, and a task on at most one CPU."""
    seen = set()
    for cpu in m.sched.cpus:
        t = cpu.curr
        if t is not None:
            assert t.cpu is cpu, f"t={rec[0]}: {t} is curr of {cpu} but thinks it is on {t.cpu}"
            assert t.pid not in seen
            seen.add(t.pid)


RECLAIMABLE = """
[machine]
cpus = 2
memory = "512MiB"
page_cache = "300MiB"
[run]
duration = "8s"
[[tasks]]
name = "grower"
program = [{ op = "alloc", size = "250MiB", rate = "64MiB/s" }, { op = "sleep", time = "30s" }]
"""


def test_kswapd_is_woken_below_low_reclaims_and_sleeps():
    r = sim.run(parse_config(RECLAIMABLE), checkers=default_checkers() + [one_task_per_cpu], keep_records=True)
    kswapd_pid = next(e["pid"] for e in _events(r, "sim:task_new") if e["comm"] == "kswapd0")
    wakeups = _events(r, "vmscan:mm_vmscan_wakeup_kswapd")
    wakes = _events(r, "vmscan:mm_vmscan_kswapd_wake")
    assert wakeups and wakes and wakes[0]["t"] >= wakeups[0]["t"]
    # kswapd itself reclaimed page cache
    mine = [e for e in _events(r, "vmscan:mm_vmscan_node_reclaim") if e["pid"] == kswapd_pid]
    assert sum(e["nr_reclaimed"] for e in mine) > 0
    # and went back to sleep once the node was balanced
    sleeps = _events(r, "vmscan:mm_vmscan_kswapd_sleep")
    assert any(s["t"] > wakes[-1]["t"] for s in sleeps)
    # nobody had to be killed: page cache covered the growth
    assert not _events(r, "sim:oom_kill")


HOPELESS = """
[machine]
cpus = 2
memory = "256MiB"
[run]
duration = "30s"
[[tasks]]
name = "pinned"
rss = "150MiB"
oom_score_adj = -1000
program = [{ op = "repeat", steps = [{ op = "sleep", time = "1s" }] }]
[[tasks]]
name = "nibbler"
oom_score_adj = -1000
program = [{ op = "repeat", steps = [{ op = "alloc", size = "1MiB", kind = "kernel", gfp = "GFP_NOWAIT", on_fail = "continue" }, { op = "sleep", time = "20ms" }] }]
"""


def test_kswapd_stops_being_woken_after_max_reclaim_retries_failures():
    r = sim.run(parse_config(HOPELESS), checkers=default_checkers(), keep_records=True)
    fails = _events(r, "sim:kswapd_failures")
    assert fails and fails[-1]["failures"] == MAX_RECLAIM_RETRIES
    hopeless_at = next(e["t"] for e in fails if e["failures"] == MAX_RECLAIM_RETRIES)
    assert not [w for w in _events(r, "vmscan:mm_vmscan_wakeup_kswapd") if w["t"] > hopeless_at]
    # the GFP_NOWAIT requests keep failing without ever entering the OOM killer
    assert r.machine.vmstat["alloc_fail"] > 0
    assert not _events(r, "sim:out_of_memory_enter")


def test_asyncio_backend_runs_the_same_model():
    from oomactors.config import load_default
    r = sim.run(load_default(), backend="asyncio", checkers=default_checkers() + [one_task_per_cpu], keep_records=True)
    kills = _events(r, "sim:oom_kill")
    assert [k["comm"] for k in kills] == ["leaker"]
    assert _events(r, "sim:reaper_reaped")


def test_every_scheduling_point_is_documented_and_used():
    """The documented list of named points (generated into the docs site from POINTS) is
    the surface race exploration controls."""
    import re
    from pathlib import Path

    from oomactors.sched import POINTS

    root = Path(__file__).resolve().parent.parent
    from oomactors.docgen import points_page
    readme = points_page()
    source = "".join(p.read_text() for p in (root / "oomactors").rglob("*.py") if p.name != "sched.py")
    used = set(re.findall(r'"((?:[a-z_]+)\.[a-z_]+)"', source)) & set(POINTS)
    for name in POINTS:
        assert f"| `{name}` |" in readme, name
    assert used == set(POINTS), set(POINTS) - used
