"""Bounded exhaustive search (oomactors/exhaustive.py): every schedule of at most N picks,
breadth first, with a partial-order reduction that leaves out picks which only reorder
independent steps -- and loses nothing by it."""

from __future__ import annotations

import json

from click.testing import CliRunner
from test_choice import OFF, PAIR, PAIR_TEXT

from oomactors import sim
from oomactors.choices import Schedule
from oomactors.cli import main
from oomactors.config import parse_config
from oomactors.events import EVENT_ID
from oomactors.exhaustive import Tracker
from oomactors.explore import explore, load_repro, replay_repro, write_repro
from oomactors.schedule import ReplayScheduler

# PAIR's two hogs and two tasks that only compute and sleep: their steps touch no memory,
# so some picks only reorder independent steps
TICKS = parse_config(PAIR_TEXT.replace('duration = "2s"', 'duration = "300ms"\nseed = 2') + """
[[tasks]]
name = "tick"
count = 2
program = [ { op = "repeat", steps = [ { op = "compute", time = "4ms" }, { op = "sleep", time = "8ms" } ] } ]
""", "<ticks>")


def test_the_race_needs_one_pick_and_exhaustive_finds_it(tmp_path):
    none = explore(PAIR, ["oom_lock_exclusion"], scheduler="exhaustive", depth=0, fixes=OFF)
    assert none.violation is None
    assert none.exhaustive == {"depth": 0, "por": True, "runs": 1, "pruned": 0, "exhausted": True,
                               "cut_by_budget": False, "per_depth": [1]}
    res = explore(PAIR, ["oom_lock_exclusion"], scheduler="exhaustive", depth=1, budget=400, fixes=OFF)
    assert res.violation is not None and res.violation.invariant == "oom_lock_exclusion"
    ex = res.exhaustive
    assert ex["per_depth"][0] == 1 and ex["runs"] == sum(ex["per_depth"]) == res.violation.found_at
    assert not ex["exhausted"] and not ex["cut_by_budget"]
    # one pick, of who runs first, does it (breadth first: no smaller schedule did)
    assert len(res.schedule) == 1 and res.schedule.choices[0].action <= -2
    path = tmp_path / "ex.json"
    write_repro(path, res.repro)
    outcome, _ = replay_repro(load_repro(path))
    assert str(outcome.violation) == res.violation.message
    # with oom_lock on, every schedule of one pick is clean: the space is exhausted
    safe = explore(PAIR, ["oom_lock_exclusion"], scheduler="exhaustive", depth=1, budget=400)
    assert safe.violation is None and safe.exhaustive["exhausted"]
    assert safe.exhaustive["runs"] == 1 + safe.exhaustive["per_depth"][1] > 100


def test_the_reduction_prunes_and_loses_nothing():
    plain = explore(TICKS, ["oom_lock_exclusion"], scheduler="exhaustive", depth=1, budget=1000, por=False)
    por = explore(TICKS, ["oom_lock_exclusion"], scheduler="exhaustive", depth=1, budget=1000)
    assert plain.violation is None and por.violation is None
    assert plain.exhaustive["exhausted"] and por.exhaustive["exhausted"]
    assert plain.exhaustive["pruned"] == 0 and por.exhaustive["pruned"] > 0
    assert por.exhaustive["runs"] + por.exhaustive["pruned"] == plain.exhaustive["runs"]
    # each pruned schedule really reaches what the default run reaches: the same events
    # (in another order) and the same memory at the end
    tracker = Tracker(Schedule())
    base = sim.run(TICKS, seed=2, scheduler=tracker, keep_records=True)
    kept = {s.dumps() for s in tracker.children(Schedule(), True)[0]}
    pruned = [s for s in tracker.children(Schedule(), False)[0] if s.dumps() not in kept]
    assert len(pruned) == por.exhaustive["pruned"]
    hold = EVENT_ID["sched:hold"]
    for schedule in pruned:
        got = sim.run(TICKS, seed=2, scheduler=ReplayScheduler(schedule), keep_records=True)
        assert sorted((r for r in got.records if r[1] != hold), key=repr) == sorted(base.records, key=repr)
        assert got.machine.vmstat == base.machine.vmstat
        assert [z.nr_free for z in got.machine.zones] == [z.nr_free for z in base.machine.zones]
    # and the race is still found with the reduction on
    off = {"oom_lock": False}
    found = [explore(TICKS, ["oom_lock_exclusion"], scheduler="exhaustive", depth=1, budget=1000, fixes=off,
                     por=p) for p in (False, True)]
    assert all(r.violation is not None for r in found)
    assert found[1].violation.found_at <= found[0].violation.found_at


def test_a_budget_cuts_the_search_and_jobs_change_nothing():
    cut = explore(PAIR, ["oom_lock_exclusion"], scheduler="exhaustive", depth=1, budget=5)
    assert cut.runs == 5 and cut.exhaustive["cut_by_budget"] and not cut.exhaustive["exhausted"]
    one = explore(PAIR, ["oom_lock_exclusion"], scheduler="exhaustive", depth=1, budget=60, fixes=OFF, jobs=1)
    two = explore(PAIR, ["oom_lock_exclusion"], scheduler="exhaustive", depth=1, budget=60, fixes=OFF, jobs=2)
    a, b = one.as_json(), two.as_json()
    a.pop("seconds"), b.pop("seconds")
    assert a == b and one.repro == two.repro


def test_the_command_line_reports_the_search(tmp_path):
    cfg = tmp_path / "pair.toml"
    cfg.write_text("[kernel.fixes]\noom_lock = false\n" + PAIR_TEXT)
    out = tmp_path / "r.json"
    p = CliRunner().invoke(main, ["explore", str(cfg), "--check", "oom_lock_exclusion", "--scheduler",
                                  "exhaustive", "--depth", "1", "--budget", "400", "--json", "--out", str(out)])
    assert p.exit_code == 1, p.output
    doc = json.loads(p.stdout)
    assert doc["scheduler"] == "exhaustive" and doc["exhaustive"]["depth"] == 1
    assert doc["exhaustive"]["runs"] == doc["runs"] == doc["result"]["found_at_run"]
    p = CliRunner().invoke(main, ["explore", str(cfg), "--check", "oom_lock_exclusion", "--scheduler",
                                  "exhaustive", "--depth", "0", "--out", str(out)])
    assert p.exit_code == 0
    assert "exhaustive search to depth 0: 1 schedules run" in p.stdout and "the space is exhausted" in p.stdout
    p = CliRunner().invoke(main, ["explore", str(cfg), "--check", "oom_lock_exclusion", "--scheduler", "pct",
                                  "--depth", "0"])
    assert p.exit_code == 2 and "PCT's depth must be at least 1, not 0" in p.stderr
