"""Controlled scheduling (oomactors/schedule.py and the Sched hook): the default scheduler
changes nothing, a seed gives one schedule, a recorded schedule replays to the same trace
bytes, a replay that no longer fits says where, and holds are safe at every point --
including with oom_lock held."""

from __future__ import annotations

import io
from pathlib import Path

import msgpack
import pytest
from helpers import check_one_victim_at_a_time, events

from oomactors import sim
from oomactors.config import parse_config
from oomactors.errors import InputError
from oomactors.schedule import (YIELD, Choice, PCTScheduler, RandomScheduler, ReplayScheduler,
                                Schedule, ScheduleDivergence, make_scheduler)
from oomactors.trace.stream import TraceWriter

ROOT = Path(__file__).resolve().parent.parent
# three hogs on two CPUs: CPU contention, oom_lock contention and three OOM kills in 0.1 s
SMALL = parse_config("""
[machine]
cpus = 2
memory = "256MiB"
swap = "0"
page_cache = "8MiB"
[run]
duration = "5s"
meminfo_interval = "0s"
[[tasks]]
name = "hog"
count = 3
program = [ { op = "repeat", steps = [ { op = "alloc", size = "4MiB" } ] } ]
""", "<small>")
LOCKED = ("may_oom.locked", "oom.scan", "oom.select", "oom.report")


def _bytes(records: list[tuple]) -> bytes:
    pack = msgpack.Packer(use_bin_type=True).pack
    return b"".join(pack(r) for r in records)


def _trace(cfg, seed: int, scheduler) -> tuple[bytes, sim.RunResult]:
    buf = io.BytesIO()
    w = TraceWriter(buf, seed=seed, hz=cfg.kernel.hz, config=cfg.as_dict())
    res = sim.run(cfg, seed=seed, sinks=[w.write], scheduler=scheduler, keep_records=True)
    w.close()
    return buf.getvalue(), res


def test_none_scheduler_leaves_the_run_byte_identical():
    plain = sim.run(SMALL, seed=1, keep_records=True)
    none = sim.run(SMALL, seed=1, scheduler=make_scheduler("none"), keep_records=True)
    assert _bytes(none.records) == _bytes(plain.records)
    assert len(none.schedule) == 0 and len(plain.schedule) == 0
    # every decision point is counted, asked or not
    assert none.decisions == plain.decisions > 500
    assert not events(none, "sched:hold")


def test_same_seed_same_schedule_and_bytes():
    a_bytes, a = _trace(SMALL, 0, make_scheduler("random", seed=5, p=0.03))
    b_bytes, b = _trace(SMALL, 0, make_scheduler("random", seed=5, p=0.03))
    assert len(a.schedule) > 5
    assert a.schedule == b.schedule and a_bytes == b_bytes
    c = sim.run(SMALL, seed=0, scheduler=make_scheduler("random", seed=6, p=0.03), keep_records=True)
    assert c.schedule != a.schedule
    # each recorded choice is an event of the trace, at its index, pid and point
    holds = [(e["index"], e["pid"], e["point"], e["action"]) for e in events(a, "sched:hold")]
    assert holds == [tuple(ch) for ch in a.schedule.to_json()]
    # the random walk uses both surfaces: holds and picks of who runs first
    assert {c.action > 0 or c.action == YIELD for c in a.schedule} == {True, False}
    assert a.machine.sched.clock.repairs == 0


def test_recorded_schedule_replays_to_the_same_trace_bytes():
    rec_bytes, rec = _trace(SMALL, 2, make_scheduler("random", seed=1, p=0.02))
    assert any(c.action == YIELD for c in rec.schedule) and any(c.action > 0 for c in rec.schedule)
    for schedule in (Schedule.loads(rec.schedule.dumps()), Schedule.from_json(rec.schedule.to_json())):
        assert schedule == rec.schedule
        got_bytes, got = _trace(SMALL, 2, make_scheduler("replay", schedule=schedule))
        assert got_bytes == rec_bytes
        assert got.schedule == rec.schedule
    # index + action alone (a lenient schedule, as Hypothesis draws them) gives the same run
    lenient = ReplayScheduler(rec.schedule.without_anchors(), strict=False)
    assert _trace(SMALL, 2, lenient)[0] == rec_bytes


def test_divergence_names_the_choice():
    rec = sim.run(SMALL, seed=0, scheduler=make_scheduler("random", seed=2, p=0.01, switch=0.0),
                  keep_records=True)
    first = rec.schedule.choices[0]
    wrong = Schedule((first._replace(pid=first.pid + 100),) + rec.schedule.choices[1:])
    with pytest.raises(ScheduleDivergence) as exc:
        sim.run(SMALL, seed=0, scheduler=make_scheduler("replay", schedule=wrong), keep_records=True)
    assert str(exc.value) == (f"choice #{first.index}: schedule says pid {first.pid + 100} at {first.point}, "
                              f"the run is at pid {first.pid} at {first.point}")
    # a choice the run never reaches
    late = Schedule(rec.schedule.choices + (Choice(10**7, 4, "fault.cpu", 1),))
    with pytest.raises(ScheduleDivergence, match=r"choice #10000000: .* the run ended after \d+ decision"):
        sim.run(SMALL, seed=0, scheduler=make_scheduler("replay", schedule=late), keep_records=True)


def test_holds_with_oom_lock_held_keep_the_invariants(simulate):
    """Preempt the oom_lock holder at every point inside the lock (yield, 1 and 5 jiffies):
    the page books, the mutex and one-victim-at-a-time still hold, the clock never needed
    repairing (run_checked asserts it) and every hog still dies."""
    sched = RandomScheduler(7, p=1.0, menu=(YIELD, 1, 5), points=LOCKED, switch=0.0)
    res = simulate("configs/parallel-oom.toml", scheduler=sched)
    assert res.reason == "idle"
    check_one_victim_at_a_time(res)
    holder = None
    held_inside = []
    for ev in events(res, "sim:oom_lock_acquired", "sim:oom_lock_released", "sched:hold"):
        if ev["event"] == "sim:oom_lock_acquired":
            holder = ev["pid"]
        elif ev["event"] == "sim:oom_lock_released":
            holder = None
        elif ev["pid"] == holder:
            held_inside.append(ev)
    assert {e["point"] for e in held_inside} >= {"may_oom.locked", "oom.select", "oom.report"}
    assert {e["action"] for e in held_inside} == {YIELD, 1, 5}
    assert len(held_inside) == len(res.schedule)
    assert len(events(res, "oom:mark_victim")) == 10


def test_holds_everywhere_on_every_config_keep_the_invariants(simulate):
    total = 0
    for name in ("quickstart.toml", "stuck-victim.toml", "memcg-max.toml", "cpuset-race.toml"):
        res = simulate(f"configs/{name}", scheduler=make_scheduler("random", seed=3, p=0.1))
        assert res.schedule, name
        assert res.reason in ("idle", "duration", "panic"), name
        total += len(res.schedule)
    assert total > 30


def test_asyncio_backend_applies_holds(simulate):
    res = simulate("configs/quickstart.toml", backend="asyncio",
                   scheduler=make_scheduler("random", seed=1, p=0.02))
    assert {c.action for c in res.schedule} & {YIELD} and len(events(res, "sched:hold")) == len(res.schedule)


def test_schedule_text_form():
    s = Schedule.loads("12:alloc.cond_resched@5=+3; 40:oom.scan@7=y 9=+25")
    assert s.choices == (Choice(9, None, None, 25), Choice(12, 5, "alloc.cond_resched", 3),
                         Choice(40, 7, "oom.scan", YIELD))
    assert s.dumps() == "9=+25; 12:alloc.cond_resched@5=+3; 40:oom.scan@7=y"
    assert s.lenient and not Schedule.loads("1:oom.scan@3=+1").lenient
    assert Schedule.loads("") == Schedule() and Schedule.from_json(s.to_json()) == s
    for bad, what in (("12:nowhere@5=+3", "unknown scheduling point 'nowhere'"),
                      ("12:oom.scan@5=+0", "action must be"),
                      ("12:oom.scan@5", "expected INDEX:POINT@PID=ACTION"),
                      ("1=y; 1=+2", "decision 1 given twice")):
        with pytest.raises(InputError, match=what):
            Schedule.loads(bad)
    with pytest.raises(InputError, match=r"schedule\[0\]: expected \[index, pid, point, action\]"):
        Schedule.from_json([[1, 2]])
    with pytest.raises(InputError, match="unknown scheduler 'fifo'"):
        make_scheduler("fifo")
