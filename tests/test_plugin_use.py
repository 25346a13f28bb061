"""The pytest plugin as a user meets it: schedules drawn for a config without counting its
decision points first, durations written as in configs, reproducers in one place across
sessions, and failures that show the property and the replay line, not the plugin."""

from __future__ import annotations

import textwrap

from hypothesis import given, settings

from oomactors import sim
from oomactors.testing.strategies import SIM_SETTINGS, _decisions, schedules, validate

pytest_plugins = ["pytester"]

SMALL = validate({
    "machine": {"cpus": 2, "memory": "64MiB"},
    "run": {"duration": "2s"},
    "tasks": [{"name": "hog", "count": 2, "program": [{"op": "alloc", "size": "40MiB"}]}],
})


def test_schedules_for_a_config_count_its_decisions_themselves():
    k = sim.run(SMALL, env_checks=False).decisions
    assert _decisions(SMALL, SMALL.run.seed) == k > 0
    drawn = []

    @settings(SIM_SETTINGS, derandomize=True, database=None, max_examples=30)
    @given(schedules(SMALL, 4))
    def draw(schedule):
        drawn.append(schedule)

    draw()
    assert drawn and all(len(s) <= 4 for s in drawn)
    assert all(c.index < k for s in drawn for c in s)
    assert max(c.index for s in drawn for c in s) > 0


def test_a_duration_is_written_as_in_configs(oom_sim):
    by_string = oom_sim(SMALL, duration="300ms")
    by_jiffies = oom_sim(SMALL, duration=75)           # 300 ms at HZ 250
    assert by_string.end_jiffies == by_jiffies.end_jiffies <= 75
    assert by_string.records == by_jiffies.records


def test_a_failure_shows_the_property_and_lands_in_the_cache(pytester):
    pytester.makepyfile(test_race=textwrap.dedent('''
        # no dentry/inode cache: the shrinker's batches would stagger the hogs' OOM calls
        CFG = {"machine": {"cpus": 4, "memory": "64MiB", "slab_reclaimable": "0"}, "run": {"duration": "2s"},
               "tasks": [{"name": "hog", "count": 4,
                          "program": [{"op": "alloc", "size": "24MiB"}, {"op": "sleep", "time": "1s"}]}]}

        def test_one_victim_at_a_time(oom_sim):
            oom_sim(CFG, fixes={"oom_lock": False}, checks=["oom_lock_exclusion"], duration="1s")
    '''))
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "invariant oom_lock_exclusion violated" in out
    assert "reproduce: oomactors run --replay" in out
    # the traceback is the test's line, not the plugin's machinery
    assert "test_race.py:7" in out or "oom_sim(CFG" in out
    assert "testing/plugin.py" not in out and "def run_checked" not in out
    repros = list((pytester.path / ".pytest_cache" / "d" / "oomactors-repro").glob("*.json"))
    assert len(repros) == 1 and repros[0].name.startswith("oom_lock_exclusion-")
    # a second session writes the same file in the same place
    pytester.runpytest("-p", "no:randomly").assert_outcomes(failed=1)
    assert list((pytester.path / ".pytest_cache" / "d" / "oomactors-repro").glob("*.json")) == repros


def test_a_result_reads_by_name_as_a_trace_file_does(oom_sim, tmp_path):
    import oomactors
    from oomactors.api import Run

    result = oom_sim("configs/quickstart.toml", seed=0, checks=())
    mem = Run.from_result(result)
    disk = oomactors.run("configs/quickstart.toml", seed=0, trace=tmp_path / "q.trace")
    # the same events, decoded with names, whether read from memory or from the trace file
    assert list(mem.iter_events()) == list(disk.iter_events())
    kill = next(mem.iter_events(["sim:oom_kill"]))
    assert kill["comm"] == "leaker" and kill["constraint"] == "CONSTRAINT_NONE"
    assert mem.summary == disk.summary and mem.kills.equals(disk.kills)
    assert mem.seed == 0 and mem.path == "<memory>"


def test_a_failure_reads_by_name_up_to_the_violation(oom_sim):
    import pytest

    from oomactors.testing.plugin import SimFailure

    with pytest.raises(SimFailure) as e:
        oom_sim("configs/races/oom_lock.toml", seed=3, checks=["single_pending_victim"])
    kills = e.value.run.frame("sim:oom_kill")
    # the run stops at the second kill decision for one mm: the failure names that pid
    assert len(kills) >= 2 and f"pid {kills['pid'].iloc[-1]} " in e.value.message
