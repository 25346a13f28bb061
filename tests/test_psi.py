"""PSI (oomactors/psi.py) against hand-computed values of kernel/sched/psi.c's formulas.

The unit tests drive a :class:`Psi` directly with a hand-moved clock and stand-in tasks;
the expected averages are computed here from the kernel's formula, independently of the
module:

    avg' = (avg * e + pct * 2048 * (2048 - e) + (2047 if pct * 2048 >= avg else 0)) // 2048

with e = 1677 / 1981 / 2034 (10 s / 60 s / 300 s) and pct the integer percentage of the
period's stall time.  HZ is 250, so PSI_FREQ is 501 jiffies (2.004 s) and the averaging
worker runs at jiffies 501, 1003, 1504, 2005, ... (the first 2 s after the first change,
then one tick after each fixed 2.004 s step).
"""

from __future__ import annotations

from oomactors import psi as P
from oomactors.config import Config
from oomactors.events import EVENT_ID
from oomactors.kernel.memcontrol import MemCgroup
from oomactors.units import parse_duration

HZ = 250
J = 1_000_000_000 // HZ     # ns per jiffy
E = (1677, 1981, 2034)


def hand_calc_load(avg: int, e: int, pct: int) -> int:
    active = pct * 2048
    new = avg * e + active * (2048 - e)
    if active >= avg:
        new += 2047
    return new // 2048


class Clock:
    now = 0


class FakeTask:
    def __init__(self, pid: int, memcg=None) -> None:
        self.pid = pid
        self.memcg = memcg
        self.cpu = None
        self.last_cpu = 0


def make(ncpus: int = 2, paths=()):
    root = MemCgroup("/", None, 1, 0)
    memcgs = {"/": root}
    for path in paths:
        parent = memcgs[path.rsplit("/", 1)[0] or "/"]
        memcgs[path] = MemCgroup(path, parent, 1, 0)
    clock = Clock()
    return P.Psi(HZ, ncpus, root, memcgs, clock), clock, memcgs


def test_fixed_point_helpers_match_the_kernel():
    # the first sample of 50 %: (0*1677 + 102400*371 + 2047) // 2048
    assert P.calc_load(0, P.EXP_10s, 50 * P.FIXED_1) == 18550
    assert P.centi(18550) == 905          # printed "avg10=9.05"
    # x**2 with rounding: (1677*1677 + 1024) >> 11
    assert P.fixed_power_int(1677, 11, 2) == 1373
    assert P.fixed_power_int(1677, 11, 0) == 2048
    assert P.fixed_power_int(1677, 11, 1) == 1677
    # n steps of decay toward 0 in one go
    assert P.calc_load_n(64332, P.EXP_10s, 0, 2) == 64332 * 1373 // 2048
    assert P.psi_freq(250) == 501 and P.psi_freq(1000) == 2001


def test_half_stalled_for_10s_then_nothing_gives_the_kernels_averages():
    """Two CPUs busy the whole time; the task on CPU 0 is in a memory stall on the CPU for
    the first 10 s, the one on CPU 1 never is: SOME = FULL = 50 % (each CPU weighs its
    non-idle time), then 0.  The averages climb and decay with the kernel's lag."""
    psi, clock, _ = make(ncpus=2)
    a, b = FakeTask(10), FakeTask(11)
    psi.sched(a, 0, True, True)
    psi.memstall(a, True)
    psi.sched(b, 1, True, True)
    g = psi.system
    assert g.avgs_work_at == 501
    updates = []
    for t in range(1, 5001):
        clock.now = t
        if t == 2500:                       # 10 s: the stall ends
            psi.memstall(a, False)
        last = g.avg_last_update
        g.advance(t)
        if g.avg_last_update != last:
            updates.append((t, [list(g.avg[P.SOME]), list(g.avg[P.FULL])]))
    assert [t for t, _ in updates] == [501, 1003, 1504, 2005, 2506, 3007, 3508, 4009, 4510]
    # by hand: each window is one period; half of CPU 0's stall time weighted equally
    # with CPU 1's none gives exactly 50 %, except the window (2005, 2506] that holds the
    # end of the stall: 495 of its 501 jiffies -> 495 * 501 / 1002 jiffies -> 49 %
    pcts = [50, 50, 50, 50, 49, 0, 0, 0, 0]
    avg = [0, 0, 0]
    for (t, got), pct in zip(updates, pcts):
        avg = [hand_calc_load(avg[i], E[i], pct) for i in range(3)]
        assert got[0] == avg, t
        assert got[1] == avg, t          # the stalled task was on its CPU: FULL too
    # literally: what /proc/pressure/memory would print at each update
    printed = []
    avg10 = 0
    for pct in pcts:
        avg10 = hand_calc_load(avg10, 1677, pct)
        printed.append(f"{avg10 >> 11}.{((avg10 & 2047) * 100) >> 11:02d}")
    assert printed == ["9.05", "16.47", "22.54", "27.52", "31.41", "25.72", "21.06", "17.24", "14.12"]
    # the lag: at 10 s, after 10 s of 50 % stall, avg10 shows barely 28 %
    assert P.centi(updates[3][1][0][0]) == 2752
    # total= counts the stall exactly: 5 s of 10 s (0.5 of 10 s on 2 busy CPUs)
    assert g.total[P.PSI_AVGS][P.SOME] == 5 * 10**9


def test_idle_group_stops_the_worker_and_decays_missed_periods():
    """An idle group stops its averaging worker; the next change re-arms it PSI_FREQ later
    and the update decays the missed periods in one calc_load_n step."""
    psi, clock, _ = make(ncpus=1)
    a = FakeTask(10)
    psi.sched(a, 0, True, True)
    psi.memstall(a, True)                     # stalled on the CPU: 100 %
    clock.now = 1000
    psi.memstall(a, False)
    psi.sched(a, 0, False, False)             # and asleep: the group is idle
    g = psi.system
    for t in range(1001, 3000):
        g.advance(t)
    # worker runs: 501 (100 %), 1003 (the stall ended at 1000: 497 of 502 jiffies), 1504
    # (nothing happened in its window: it stops)
    assert g.avgs_work_at is None
    assert g.avg_last_update == 1504 * J
    avg = [0, 0, 0]
    for pct in (100, 497 * 100 // 502, 0):
        avg = [hand_calc_load(avg[i], E[i], pct) for i in range(3)]
    assert list(g.avg[P.SOME]) == avg
    # 20 s later a task wakes: the worker comes back PSI_FREQ after that change
    clock.now = 6000
    psi.sched(a, 0, True, True)
    assert g.avgs_work_at == 6000 + 501
    g.advance(6501)
    # next due was 2004 (jiffy); now 6501: (6501 - 2004) // 501 = 8 missed periods, and
    # the sampled period runs from the last update plus those 8: 6501 - (1504 + 8 * 501)
    missed = (6501 - 2004) // 501
    assert missed == 8
    period = 6501 - (1504 + missed * 501)
    decayed = [P.calc_load(avg[i], P.fixed_power_int(E[i], 11, missed), 0) for i in range(3)]
    expect = [hand_calc_load(decayed[i], E[i], 0) for i in range(3)]
    assert period == 989
    assert list(g.avg[P.SOME]) == expect


def test_some_versus_full_with_two_tasks():
    """SOME: somebody is stalled.  FULL: every non-idle task is stalled -- or the CPU
    itself is busy reclaiming (a memstall task on the CPU)."""
    psi, clock, _ = make(ncpus=1)
    g = psi.system
    a, b = FakeTask(10), FakeTask(11)
    # 0..100: A sleeps on reclaim IO (stalled, not runnable), B runs: SOME only
    psi.sched(a, 0, True, True)
    psi.memstall(a, True)
    psi.sched(a, 0, False, False)
    psi.sched(b, 0, True, True)
    clock.now = 100
    assert g.peek_totals(100) == (100 * J, 0)
    # 100..150: B sleeps too: nobody productive is left: FULL
    psi.sched(b, 0, False, False)
    clock.now = 150
    assert g.peek_totals(150) == (150 * J, 50 * J)
    # 150..200: A is back on the CPU reclaiming while B waits in the run queue: FULL
    # (the CPU does nothing productive)
    psi.sched(a, 0, True, True)
    psi.sched(b, 0, True, False)
    clock.now = 200
    assert g.peek_totals(200) == (200 * J, 100 * J)
    # 200..260: A leaves reclaim: nothing
    psi.memstall(a, False)
    clock.now = 260
    assert g.peek_totals(260) == (200 * J, 100 * J)
    # show() prints total= in microseconds
    p = psi.show("/")
    assert (p.some.total, p.full.total) == (800_000, 400_000)
    assert "some avg10=0.00 avg60=0.00 avg300=0.00 total=800000" in p.text()


def test_a_stall_counts_in_the_memcg_and_every_ancestor_only():
    psi, clock, memcgs = make(ncpus=2, paths=("/a", "/a/b", "/c"))
    t = FakeTask(10, memcgs["/a/b"])
    u = FakeTask(11, memcgs["/c"])
    psi.sched(t, 0, True, True)
    psi.sched(u, 1, True, True)
    psi.memstall(t, True)
    clock.now = 50
    some = {path: psi.group(path).peek_totals(50)[0] for path in ("/", "/a", "/a/b", "/c")}
    # /a/b and /a only see t (one busy CPU, stalled all along); the system sees two busy
    # CPUs of which one stalled; /c nothing
    assert some == {"/a/b": 50 * J, "/a": 50 * J, "/": 25 * J, "/c": 0}


def test_trigger_fires_once_per_window():
    """A "some 100000 1000000" trigger: 100 ms of stall within 1 s; at most one event a
    window."""
    psi, clock, _ = make(ncpus=1)
    g = psi.system
    a = FakeTask(10)
    psi.sched(a, 0, True, True)
    clock.now = 1000                         # 4 s after boot (the first second after boot
    trig = P.PsiTrigger(g, P.SOME, 100_000, 1_000_000, 1000)  # is rate-limited: last event 0)
    assert trig.poll_period == 100_000_000
    psi.memstall(a, True)
    fired = []
    for t in range(1001, 1000 + 2 * HZ + 1):
        clock.now = t
        if t % 25 == 0:                  # the poller every 100 ms
            if P.poll_triggers([trig], t):
                fired.append(t)
    # the stall reaches 100 ms at jiffy 1025; the next event may come a window (1 s) later
    assert fired == [1025, 1275]
    assert trig.events == 2


def test_default_run_has_no_psi_events_and_samples_when_asked(simulate):
    cfg = Config.model_validate({
        "machine": {"memory": "256MiB", "cpus": 2},
        "run": {"duration": "6s"},
        "memcgs": [{"path": "/w", "high": "48MiB"}],
        "tasks": [{"name": "grower", "memcg": "/w", "program": [
            {"op": "alloc", "size": "96MiB", "rate": "64MiB/s"}, {"op": "sleep", "time": "10s"}]}],
    })
    sid = EVENT_ID["sim:psi"]
    plain = simulate(cfg)
    assert not any(r[1] == sid for r in plain.records)
    sampled = simulate(cfg.model_copy(update={"run": cfg.run.model_copy(
        update={"psi_samples": parse_duration("1s")})}))
    samples = [r for r in sampled.records if r[1] == sid]
    # one per group per second, and the final one at the end of the run
    assert {r[4] for r in samples} == {"/", "/w"}
    assert len(samples) == 2 * 6 + 2
    # the same events as without samples otherwise: observing does not change the run
    assert [r for r in sampled.records if r[1] != sid] == plain.records
    # memory.high throttling stalls the group; the totals only grow
    totals = [r[8] for r in samples if r[4] == "/w"]
    assert totals == sorted(totals) and totals[-1] > 0
    assert P.psi_totals(sampled.records) == P.psi_totals(sampled)
    assert P.psi_totals(plain.records) is None
    assert P.psi_totals(plain)["some_us"] == P.psi_totals(sampled)["some_us"]
