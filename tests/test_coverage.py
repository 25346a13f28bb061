"""Coverage: which scheduling points and kernel branches runs reached, and a search that
never reached the code its invariants guard says so (exit 3 under --strict)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from oomactors.cli import main
from oomactors.config import load_config
from oomactors.coverage import BRANCHES, GUARDS
from oomactors.invariants import INVARIANTS
from oomactors.repro import checked_run

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str):
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res


@pytest.mark.parametrize("config, branch", [
    ("configs/quickstart.toml", "out_of_memory: killed"),
    ("configs/costly-order.toml", "warn_alloc"),
    ("configs/nofs-loop.toml", "out_of_memory: no_fs"),
    ("configs/stuck-victim.toml", "oom_reaper: unable to reap"),
    ("configs/parallel-oom.toml", "out_of_memory: victim_pending"),
    ("configs/parallel-oom.toml", "may_oom: trylock failed"),
    ("configs/unkillable-panic.toml", "out_of_memory: no_killable"),
    ("configs/allocating-task.toml", "out_of_memory: killed_allocating_task"),
])
def test_each_config_reaches_the_branch_it_shows(config, branch):
    out = checked_run(load_config(ROOT / config), seed=0, checks=[])
    cov = out.coverage
    assert branch in BRANCHES and cov["branches"].get(branch, 0) > 0, sorted(cov["branches"])
    assert cov["runs"] == 1 and cov["points"]
    assert cov["oom_invocations"] == cov["branches"].get("out_of_memory", 0)


def test_every_invariant_guard_names_known_branches():
    for name, guarded in GUARDS.items():
        assert name in INVARIANTS and all(b in BRANCHES for b in guarded)


QUIET = """
[machine]
cpus = 2
memory = "256MiB"
[run]
duration = "1s"
[[tasks]]
name = "small"
program = [ { op = "alloc", size = "8MiB" }, { op = "sleep", time = "100ms" } ]
"""


def test_a_search_that_never_reaches_an_oom_is_vacuous(tmp_path):
    cfg = tmp_path / "quiet.toml"
    cfg.write_text(QUIET)
    res = _cli("explore", str(cfg), "--check", "oom_lock_exclusion,page_conservation", "--budget", "3", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["coverage"]["oom_invocations"] == 0 and doc["coverage"]["kills"] == 0
    assert doc["coverage"]["runs"] == 3 and "task.sleep" in doc["coverage"]["points"]
    assert doc["vacuous"] == {"oom_lock_exclusion": ["out_of_memory", "may_oom: trylock failed"]}
    assert res.stderr.strip() == ("oomactors: warning: no run reached what oom_lock_exclusion guards "
                                  "(out_of_memory or may_oom: trylock failed): the search says nothing about it")
    strict = _cli("explore", str(cfg), "--check", "oom_lock_exclusion", "--budget", "3", "--strict")
    assert strict.exit_code == 3
    assert "reached" in strict.stdout and "0 out_of_memory calls, 0 kills" in strict.stdout


def test_a_search_that_reaches_the_oom_path_reports_it(tmp_path):
    res = _cli("explore", str(ROOT / "configs/parallel-oom.toml"), "--check", "oom_lock_exclusion",
               "--budget", "3", "--strict", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    cov = doc["coverage"]
    assert doc["vacuous"] == {} and cov["runs"] == 3
    assert cov["oom_invocations"] > 0 and cov["kills"] > 0
    assert {"out_of_memory", "__oom_kill_process", "may_oom: trylock failed"} <= set(cov["branches"])
    assert cov["points"]["may_oom.trylock_failed"] > 0


@pytest.mark.parametrize("race, invariant, branch", [
    ("memcg_dying_bypass", "no_memcg_oom_by_dying_task", "memcg oom: dying at oom_lock"),
    ("mmf_unstable", "no_fault_after_reap", "check_stable_address_space"),
])
def test_a_race_found_reached_the_moment_its_invariant_guards(race, invariant, branch):
    """These guards name the race's own precondition (a dying task holding the memcg's
    oom_lock, a fault completing in an mm being reaped), not merely an OOM: the search that
    finds the race reached it."""
    res = _cli("explore", str(ROOT / "configs/races" / f"{race}.toml"), "--check", invariant,
               "--fixed-seed", "--budget", "100", "--jobs", "1", "--json")
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert doc["vacuous"] == {} and doc["coverage"]["branches"].get(branch, 0) > 0


def test_a_memcg_oom_without_a_dying_task_says_nothing_about_the_dying_bypass():
    res = _cli("explore", str(ROOT / "configs/memcg-max.toml"), "--check", "no_memcg_oom_by_dying_task",
               "--budget", "2", "--jobs", "1", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["coverage"]["branches"].get("mem_cgroup_out_of_memory", 0) > 0
    assert doc["vacuous"] == {"no_memcg_oom_by_dying_task": ["memcg oom: dying at oom_lock"]}
