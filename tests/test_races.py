"""The race catalogue (README "Race catalogue", ``configs/races/``).

Every kernel fix that guards the OOM path is a switch under ``[kernel.fixes]``.  For each
one a shipped config turns it off; ``explore`` with the config's seed held must find the
violation the config documents within a small budget -- only after its clean plain run,
except for the two scenario tests -- the same schedule with the switch on must be clean,
the reproducer must replay to the same violation with identical trace bytes, and with the
switch turned back on a search must find no violation of any of the catalogue's
invariants.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oomactors.config import FIXES, load_config
from oomactors.explore import explore
from oomactors.repro import checked_run, load_repro, replay_repro, write_repro
from oomactors.schedule import ReplayScheduler
from oomactors.trace.stream import TraceWriter

ROOT = Path(__file__).resolve().parent.parent
RACES = ROOT / "configs" / "races"

# switch -> (a phrase of the documented violation, budget with the switch off, budget with it on,
#            whether it is a scenario test: its plain run shows it, no schedule needed)
CATALOGUE = {
    "oom_lock": ("but its mm was already killed", 40, 30, False),
    "high_wmark_last_attempt": ("the last attempt at the HIGH watermark would have succeeded", 40, 40, False),
    "pending_victim_abort": ("is still pending", 40, 30, False),
    # a D-state victim with no reaper never exits, in any interleaving (docs/races.md)
    "oom_reaper": ("has neither exited nor got MMF_OOM_SKIP", 3, 10, True),
    # likewise a victim the reaper gave up on, when MMF_OOM_SKIP is ignored
    "mmf_oom_skip": ("is still in the page allocator", 3, 5, True),
    "cpuset_retry": ("<Zone node1 Normal> had", 40, 30, False),
    "task_will_free_mem": ("(app) killed by", 60, 30, False),
    "reaper_delay": ("runs its own exit", 80, 30, False),
    "memcg_oom_margin": ("had a margin of", 40, 30, False),
    "mmf_unstable": ("(db) mapped", 40, 30, False),
    "memcg_dying_bypass": ("(sidecar) in a memcg OOM it entered while dying", 40, 30, False),
}

# with the switch on, none of these may break (the bounds as the configs' commands give them)
ALL_CHECKS = ["single_pending_victim", "no_unnecessary_kill", "victim_exit_bound:2s",
              "alloc_progress_bound:2s", "no_reap_during_exit", "oom_lock_exclusion",
              "no_unkillable_killed", "no_fault_after_reap",
              "no_memcg_oom_by_dying_task"]

_CHECK = re.compile(r"^#\s+oomactors explore (\S+) --check (\S+) --fixed-seed\s*$", re.M)


def _race(switch: str) -> tuple[Path, str]:
    """The race's config and the invariant its comment tells explore to check."""
    path = RACES / f"{switch}.toml"
    found = _CHECK.findall(path.read_text(encoding="utf-8"))
    assert len(found) == 1, f"{path.name}: one `oomactors explore ... --check NAME --fixed-seed` line expected"
    where, check = found[0]
    assert where == f"configs/races/{switch}.toml"
    return path, check


def test_every_switch_has_a_race_config_with_only_that_switch_off():
    assert sorted(CATALOGUE) == sorted(FIXES)
    assert sorted(p.stem for p in RACES.glob("*.toml")) == sorted(FIXES)
    for switch in FIXES:
        path, _ = _race(switch)
        fixes = load_config(path).kernel.fixes.model_dump()
        assert [name for name, on in fixes.items() if not on] == [switch], path.name


@pytest.mark.parametrize("switch", list(CATALOGUE))
def test_switch_off_explore_finds_the_race_and_replays_it(switch, tmp_path):
    path, check = _race(switch)
    phrase, budget, _, scenario = CATALOGUE[switch]
    cfg = load_config(path)
    # the seed held (--fixed-seed): every run is the config's seed, only the schedule moves
    res = explore(cfg, [check], "random", budget=budget, seed=0, vary_seed=False)
    v = res.violation
    assert v is not None, f"{switch}: no violation of {check} in {res.runs} runs"
    assert v.invariant == check and phrase in v.message, v.message
    assert v.seed == cfg.run.seed
    if scenario:
        # a scenario test: the unperturbed first run shows it
        assert v.found_at == 1 and not res.schedule
    else:
        # the race needs the scheduler: the plain run passed, the shrunk schedule is not empty
        assert v.found_at > 1 and res.schedule
    # the fix closes this very interleaving: the same schedule with the switch on is clean
    fixed = checked_run(cfg, seed=v.seed, checks=ALL_CHECKS, fixes={switch: True},
                        scheduler=ReplayScheduler(res.schedule, strict=False))
    assert fixed.violation is None, fixed.violation
    # the reproducer replays to the same violation, with identical trace bytes each time
    repro_path = tmp_path / "repro.json"
    write_repro(repro_path, res.repro)
    repro = load_repro(repro_path)
    traces = []
    for name in ("a", "b"):
        trace = tmp_path / f"{name}.trace"
        with TraceWriter(trace, seed=repro.seed, hz=repro.cfg.kernel.hz, config=repro.cfg.as_dict()) as w:
            outcome, _ = replay_repro(repro, sinks=[w.write])
        assert outcome.invariant == check and str(outcome.violation) == v.message
        traces.append(trace.read_bytes())
    assert traces[0] == traces[1]


@pytest.mark.parametrize("switch", list(CATALOGUE))
def test_switch_on_explore_finds_nothing(switch):
    path, _ = _race(switch)
    _, _, budget, _ = CATALOGUE[switch]
    res = explore(load_config(path), ALL_CHECKS, "random", budget=budget, seed=0, fixes={switch: True})
    assert res.violation is None, res.violation
    assert res.runs == budget


# --- [kernel.fixes] and the checkers' edges ------------------------------------------------------


def test_kernel_fixes_reach_the_machine_and_run_overrides_go_on_top():
    from oomactors import sim
    from oomactors.config import ConfigError, parse_config
    from oomactors.errors import InputError

    cfg = parse_config("[kernel.fixes]\noom_reaper = false\n")
    m = sim.build(cfg, fixes={"oom_lock": False})
    assert {k for k, on in m.fixes.items() if not on} == {"oom_reaper", "oom_lock"}
    assert set(m.fixes) == set(FIXES)
    # all switches on is the kernel as it is: left out of the trace header's config
    assert "fixes" not in parse_config("").as_dict()["kernel"]
    assert cfg.as_dict()["kernel"]["fixes"]["oom_reaper"] is False
    with pytest.raises(ConfigError, match=r"kernel\.fixes\.oom_lok: unknown key"):
        parse_config("[kernel.fixes]\noom_lok = false\n")
    with pytest.raises(ConfigError, match=r"kernel\.fixes\.oom_lock: expected true or false"):
        parse_config("[kernel.fixes]\noom_lock = 0\n")
    with pytest.raises(InputError, match="unknown switch 'oom_lok'"):
        sim.build(cfg, fixes={"oom_lok": False})


def test_bounded_checkers_take_their_bound_in_the_name():
    from oomactors.errors import InputError
    from oomactors.invariants import INVARIANTS

    assert "alloc_progress_bound:500ms" in INVARIANTS and "oom_lock_exclusion:1s" not in INVARIANTS
    check = INVARIANTS["victim_exit_bound:3 jiffies"]()
    assert check.invariant == "victim_exit_bound:3 jiffies"
    assert INVARIANTS["victim_exit_bound"]().invariant == "victim_exit_bound"
    with pytest.raises(InputError, match="duration needs a unit"):
        INVARIANTS["alloc_progress_bound:2"]


def test_alloc_progress_bound_fails_an_open_request_at_a_deadlocked_end():
    from oomactors import sim
    from oomactors.config import parse_config
    from oomactors.events import EVENT_ID
    from oomactors.invariants import AllocProgressBound, InvariantViolation

    m = sim.run(parse_config('[[tasks]]\nname = "t"\nprogram = [ { op = "exit" } ]\n')).machine
    pid = next(p for p, t in m.tasks.items() if t.comm == "t")
    enter = (0, EVENT_ID["sim:slowpath_enter"], 0, pid, 0, "GFP_KERNEL")
    for end, fails in (((100, "duration"), False), ((100, "deadlock"), True), ((2 * 250 + 1, "duration"), True)):
        check = AllocProgressBound("2s")
        check(m, enter)
        rec = (end[0], EVENT_ID["sim:run_end"], -1, -1, end[1])
        if fails:
            with pytest.raises(InvariantViolation, match="still in the page allocator") as e:
                check(m, rec)
            assert e.value.invariant == "alloc_progress_bound:2s"
        else:
            check(m, rec)


def test_oom_kill_allocating_task_is_exempt_from_single_pending_victim():
    # the sysctl kills current without a scan; the kernel's exclusion rules do not apply
    res = explore(load_config(ROOT / "configs" / "allocating-task.toml"), ["single_pending_victim"],
                  "random", budget=3, seed=0)
    assert res.violation is None


def test_mmf_unstable_on_the_fault_fails_with_sigbus_instead():
    # the interleaving the search found, with the fix: db's fault sees MMF_UNSTABLE and fails
    path, check = _race("mmf_unstable")
    cfg = load_config(path)
    res = explore(cfg, [check], "random", budget=40, seed=0, vary_seed=False)
    assert res.violation is not None
    out = checked_run(cfg, seed=cfg.run.seed, checks=[check], fixes={"mmf_unstable": True}, keep_records=True,
                      scheduler=ReplayScheduler(res.schedule, strict=False))
    assert out.violation is None
    from oomactors.events import EVENT_ID
    faults = [r for r in out.records if r[1] == EVENT_ID["sim:fault_unstable"]]
    assert faults and all(r[6] == "sigbus" for r in faults)
    db = next(t for t in out.machine.tasks.values() if t.comm == "db")
    assert db.dead and db.mm is None


def test_cli_fixed_seed_holds_the_seed_and_searches_perturbations_only(tmp_path):
    import json

    from click.testing import CliRunner

    from oomactors.cli import main

    path, check = _race("pending_victim_abort")
    docs = {}
    for flag in ("--fixed-seed", None):
        out = tmp_path / f"repro{bool(flag)}.json"
        args = ["explore", str(path), "--check", check, "--budget", "40", "--seed", "1",
                "--shrink-budget", "20", "--out", str(out), "--json"] + ([flag] if flag else [])
        res = CliRunner().invoke(main, args, catch_exceptions=False)
        assert res.exit_code == 1, res.output
        docs[flag] = json.loads(res.stdout)["result"]
        assert load_repro(out).seed == docs[flag]["seed"]
    held, varied = docs["--fixed-seed"], docs[None]
    # held: every run used the config's seed (0), so only a perturbed schedule found it
    assert held["seed"] == 0 and held["found_at_run"] > 1 and held["schedule"]
    # varied: run i (from 0) used seed 0 + i, and the run that found it kept its seed
    assert varied["seed"] == varied["found_at_run"] - 1
