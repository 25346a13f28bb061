"""Controlled choice (oomactors/stepper.py, oomactors/schedule.py): a scheduler picks which
of the actors ready at an instant runs next.  With no departure the run is the plain one,
byte for byte; picks are recorded sparsely, replay byte for byte and name the choice when
they no longer fit; PCT follows the paper (priorities, d-1 change points, the highest
priority offered always runs) and finds a race that needs a choice."""

from __future__ import annotations

import io
import json
import math

import pytest
from helpers import events

from oomactors import sim
from oomactors.config import load_config, parse_config
from oomactors.explore import explore, load_repro, write_repro
from oomactors.repro import checked_run
from oomactors.schedule import (Choice, PCTScheduler, ReplayScheduler, Schedule, ScheduleDivergence,
                                Scheduler, make_scheduler, pick, picked)
from oomactors.trace.stream import TraceWriter

# Two hogs on two CPUs run the machine out of memory together.  With oom_lock switched off,
# two tasks inside the OOM killer at once is a violation of oom_lock_exclusion; on the
# default schedule of seed 0 the first hog is through out_of_memory before the second
# arrives, but letting the second run first at one of the first hog's decision points
# puts both inside.
PAIR_TEXT = """
[machine]
cpus = 2
memory = "128MiB"
dma = "0"
swap = "0"
page_cache = "4MiB"
[run]
duration = "2s"
meminfo_interval = "0s"
[[tasks]]
name = "hog"
count = 2
program = [ { op = "repeat", steps = [ { op = "alloc", size = "4MiB" } ] } ]
"""
PAIR = parse_config(PAIR_TEXT, "<pair>")
OFF = {"oom_lock": False}


def _trace(cfg, seed: int, scheduler) -> tuple[bytes, sim.RunResult]:
    buf = io.BytesIO()
    w = TraceWriter(buf, seed=seed, hz=cfg.kernel.hz, config=cfg.as_dict())
    res = sim.run(cfg, seed=seed, sinks=[w.write], scheduler=scheduler, keep_records=True)
    w.close()
    return buf.getvalue(), res


class Offers(Scheduler):
    """Never departs; notes every decision point that offered more than one actor."""

    picks = True

    def __init__(self) -> None:
        self.log: list[tuple[int, int, str, list[int]]] = []

    def choose(self, index, pid, point, offered):
        if len(offered) > 1:
            self.log.append((index, pid, point, list(offered)))
        return 0


def test_asking_without_departing_gives_the_plain_bytes():
    """The controlled loop keeps the batch aside and offers it, yet runs it in the seed's
    order: the same trace bytes as the plain loop."""
    cfg = load_config("configs/parallel-oom.toml")
    plain, _ = _trace(cfg, 5, None)
    offers = Offers()
    asked, res = _trace(cfg, 5, offers)
    assert asked == plain and not res.schedule
    # choices were really on offer: many decision points had company
    assert len(offers.log) > 100
    assert all(o[0] != o[1] for *_, o in offers.log)


def test_a_pick_changes_the_run_and_replays_byte_for_byte():
    offers = Offers()
    checked_run(PAIR, seed=0, checks=["oom_lock_exclusion"], scheduler=offers, policy=None, fixes=OFF)
    index, pid, point, offered = offers.log[0]
    schedule = Schedule((Choice(index, pid, point, pick(offered[1])),))
    assert schedule.dumps() == f"{index}:{point}@{pid}=>{offered[1]}"
    assert Schedule.loads(schedule.dumps()) == schedule == Schedule.from_json(json.loads(json.dumps(schedule.to_json())))
    a_bytes, a = _trace(PAIR, 0, ReplayScheduler(schedule))
    b_bytes, b = _trace(PAIR, 0, ReplayScheduler(Schedule.loads(schedule.dumps())))
    plain, _ = _trace(PAIR, 0, None)
    assert a_bytes == b_bytes != plain
    assert a.schedule == schedule == b.schedule
    # the pick is the run's one sched:hold event, naming the actor that ran first
    ev = events(a, "sched:hold")
    assert [(e["index"], e["pid"], e["point"], e["action"]) for e in ev] == [(index, pid, point, f">{offered[1]}")]


def test_a_pick_that_no_longer_fits_names_the_choice():
    offers = Offers()
    sim.run(PAIR, seed=0, scheduler=offers)
    index, pid, point, offered = offers.log[0]
    absent = max(offered) + 40  # no such actor in this run
    bad = Schedule((Choice(index, pid, point, pick(absent)),))
    with pytest.raises(ScheduleDivergence) as exc:
        sim.run(PAIR, seed=0, scheduler=ReplayScheduler(bad))
    msg = str(exc.value)
    assert msg.startswith(f"choice #{index}: schedule says pid {pid} at {point} lets actor {absent} run first, "
                          f"the run offers actors ")
    # the actors offered, by number and name (the asker first)
    names = msg.split("the run offers actors ")[1].split(", ")
    assert [int(n.split(":")[0]) for n in names] == offered
    assert names[0].startswith(f"{offered[0]}:user_task/{pid}")


def test_random_walk_and_hypothesis_draws_use_the_choice():
    res = sim.run(PAIR, seed=0, scheduler=make_scheduler("random", seed=3, p=0.2))
    kinds = {"pick" if c.action <= -2 else "hold" for c in res.schedule}
    assert kinds == {"pick", "hold"}
    # a lenient pick (as Hypothesis draws them) runs the J-th other actor offered
    offers = Offers()
    sim.run(PAIR, seed=0, scheduler=offers)
    index, pid, point, offered = offers.log[0]
    lenient = Schedule.loads(f"{index}=~1")
    assert lenient.choices[0].target == 1 and lenient.lenient
    got = sim.run(PAIR, seed=0, scheduler=ReplayScheduler(lenient, strict=False), keep_records=True)
    assert got.schedule.dumps() == f"{index}:{point}@{pid}=>{offered[1]}"


class Watched(PCTScheduler):
    """PCT, checking after each choice that the actor to run is the highest-priority one."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.checked = 0
        self.lowered: list[tuple[int, int, float]] = []

    def choose(self, index, pid, point, offered):
        action = super().choose(index, pid, point, offered)
        runs = offered[0] if action == 0 else picked(action)
        assert all(self.prio[runs] >= self._priority(a) for a in offered)
        if index in self.change_at:
            self.lowered.append((index, offered[0], self.prio[offered[0]]))
        self.checked += len(offered) > 1
        return action


def test_pct_priorities_change_points_and_replay():
    plain = sim.run(PAIR, seed=0)
    k, n = plain.decisions, plain.machine.sched.stepper.spawned
    pct = Watched(11, k=k, n=n, depth=3)
    # random distinct priorities d..d+n-1 and d-1 distinct change points in [0, k)
    assert sorted(pct.initial.values()) == list(range(3, 3 + n)) and sorted(pct.initial) == list(range(n))
    assert len(pct.change_at) == 2 and all(0 <= i < k for i in pct.change_at)
    assert sorted(pct.change_at.values()) == [1, 2]
    assert pct.bound == 1 / (n * k ** 2)
    again = PCTScheduler(11, k=k, n=n, depth=3)
    assert (again.initial, again.change_at) == (pct.initial, pct.change_at)
    a_bytes, a = _trace(PAIR, 0, pct)
    assert pct.checked > 10 and a.schedule
    # each change point reached lowered its asker to priority i
    assert [(i, p) for i, _, p in pct.lowered] == [(i, pct.change_at[i]) for i, *_ in pct.lowered]
    b_bytes, b = _trace(PAIR, 0, PCTScheduler(11, k=k, n=n, depth=3))
    assert a_bytes == b_bytes and a.schedule == b.schedule
    # the recorded schedule (departures only) replays the PCT run byte for byte
    r_bytes, _ = _trace(PAIR, 0, ReplayScheduler(Schedule.loads(a.schedule.dumps())))
    assert r_bytes == a_bytes
    assert all(c.action <= -2 for c in a.schedule)  # PCT only picks; it never holds


def test_pct_finds_a_race_that_needs_a_choice_and_states_its_bound():
    plain = checked_run(PAIR, seed=0, checks=["oom_lock_exclusion"], scheduler=None, policy=None, fixes=OFF)
    assert plain.violation is None  # the default schedule is clean
    res = explore(PAIR, ["oom_lock_exclusion"], scheduler="pct", budget=40, seed=0, fixes=OFF,
                  vary_seed=False, shrink_budget=30)
    assert res.violation is not None and res.violation.invariant == "oom_lock_exclusion"
    doc = res.as_json()
    n, k = doc["actors"], doc["decisions"]
    assert doc["pct"] == {"n": n, "k": k, "d": 3, "bound": 1 / (n * k ** 2),
                          "log10_bound": pytest.approx(-math.log10(n * k ** 2), abs=1e-5)}
    assert any(c.action <= -2 for c in res.schedule)


def test_a_tampered_pick_in_a_reproducer_is_refused(tmp_path):
    res = explore(PAIR, ["oom_lock_exclusion"], scheduler="pct", budget=40, seed=0, fixes=OFF,
                  vary_seed=False, shrink_budget=30)
    path = tmp_path / "r.json"
    write_repro(path, res.repro)
    doc = json.loads(path.read_text())
    entry = next(e for e in doc["schedule"] if isinstance(e[3], str))
    assert entry[3].startswith(">")
    entry[3] = f">{int(entry[3][1:]) + 1}"
    path.write_text(json.dumps(doc))
    from click.testing import CliRunner

    from oomactors.cli import main
    p = CliRunner().invoke(main, ["run", "--replay", str(path)], catch_exceptions=False)
    assert p.exit_code == 2 and f"{path}: schedule: edited since the reproducer was written" in p.stderr
    with pytest.raises(Exception, match="schedule: edited"):
        load_repro(path)
