"""`oomactors explore` and reproducers under hostile use (a user tryout's findings): each
defect is one line and exit 2, or an honest count, never a crash or a wrong verdict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_choice import OFF, PAIR, PAIR_TEXT

from oomactors.cli import main
from oomactors.explore import explore, pct_bound


@pytest.fixture(scope="module")
def found():
    """A violation of oom_lock_exclusion on PAIR with oom_lock off, and its reproducer."""
    res = explore(PAIR, ["oom_lock_exclusion"], scheduler="exhaustive", depth=1, budget=400, fixes=OFF)
    assert res.violation is not None and res.repro is not None
    return res


def _write(path, repro) -> str:
    path.write_text(json.dumps(repro))
    return str(path)


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def pair_off(tmp_path):
    cfg = tmp_path / "pair.toml"
    cfg.write_text("[kernel.fixes]\noom_lock = false\n" + PAIR_TEXT)
    return cfg


# --- 1. PCT's bound in log space; a depth PCT cannot use is refused ------------------------


def test_pct_bound_is_stated_in_log_space_when_a_float_cannot_hold_it():
    small = pct_bound(4, 100, 3)
    assert small["bound"] == 1 / (4 * 100 ** 2) and small["log10_bound"] == pytest.approx(-4.60206, abs=1e-5)
    deep = pct_bound(10, 624, 200)  # 1/(10*624^199): far below the smallest float
    assert deep["bound"] == 0.0 and deep["log10_bound"] == pytest.approx(-(1 + 199 * 2.795185), abs=1e-3)


def test_pct_depth_beyond_the_change_points_is_one_line(pair_off):
    k = explore(PAIR, ["oom_lock_exclusion"], scheduler="pct", budget=1, fixes=OFF).decisions
    for depth in (str(k + 2), "99999999999999999999"):
        p = _cli("explore", str(pair_off), "--check", "oom_lock_exclusion", "--scheduler", "pct",
                 "--depth", depth, "--budget", "2")
        assert p.exit_code == 2, p.output
        assert p.stderr.strip() == (f"oomactors: error: --depth: PCT draws d-1 change points among the k={k} "
                                    f"decision points of a run, so d can be at most k+1={k + 1}, not {depth}")
    # the largest usable depth runs, and its bound is stated as a power of ten
    p = _cli("explore", str(pair_off), "--check", "oom_lock_exclusion", "--scheduler", "pct",
             "--depth", str(k + 1), "--budget", "2", "--json", "--out", str(pair_off.parent / "r.json"))
    assert p.exit_code in (0, 1), p.output
    doc = json.loads(p.stdout)["pct"]
    assert doc["d"] == k + 1 and doc["bound"] == 0.0 and doc["log10_bound"] < -300
    p = _cli("explore", str(pair_off), "--check", "oom_lock_exclusion", "--scheduler", "pct",
             "--depth", str(k + 1), "--budget", "2", "--out", str(pair_off.parent / "r.json"))
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("PCT bound"))
    assert line.endswith(f"= 10^{doc['log10_bound']:.1f}")


# --- 2. exhaustive: the budget's cut is seen whatever the batch width ----------------------


def test_exhaustive_budget_cut_is_the_same_verdict_with_one_or_two_jobs():
    for budget in (29, 30, 31, 32):  # the depth-1 space of PAIR (oom_lock on) is over 300 schedules
        one = explore(PAIR, ["oom_lock_exclusion"], scheduler="exhaustive", depth=1, budget=budget, jobs=1)
        two = explore(PAIR, ["oom_lock_exclusion"], scheduler="exhaustive", depth=1, budget=budget, jobs=2)
        a, b = one.as_json(), two.as_json()
        a.pop("seconds"), b.pop("seconds")
        assert a == b, budget
        assert a["runs"] == budget and a["exhaustive"]["cut_by_budget"] and not a["exhaustive"]["exhausted"]
    # a budget that exactly holds the space is not a cut
    whole = explore(PAIR, ["oom_lock_exclusion"], scheduler="exhaustive", depth=0, budget=1, jobs=2)
    assert whole.exhaustive["exhausted"] and not whole.exhaustive["cut_by_budget"]


# --- 3. an output onto an input is refused, the input kept ---------------------------------


def test_outputs_onto_inputs_are_refused_and_the_inputs_kept(pair_off, tmp_path):
    text = pair_off.read_text()
    alias = tmp_path / "alias.toml"
    alias.symlink_to(pair_off)
    for out in (str(pair_off), str(alias), str(tmp_path / "." / "pair.toml")):
        p = _cli("explore", str(pair_off), "--check", "oom_lock_exclusion", "--out", out)
        assert p.exit_code == 2, p.output
        assert p.stderr.strip() == (f"oomactors: error: --out {out}: is the config ({pair_off}); "
                                    "refusing to overwrite an input")
        assert pair_off.read_text() == text
    p = _cli("run", str(pair_off), "--trace", str(alias))
    assert p.exit_code == 2 and "--trace" in p.stderr and "refusing to overwrite an input" in p.stderr
    assert pair_off.read_text() == text
    trace = tmp_path / "t.trace"
    assert _cli("run", str(pair_off), "--trace", str(trace)).exit_code == 0
    data = trace.read_bytes()
    for cmd in (("trace", "export", str(trace), "-o", str(trace), "--format", "csv"),):
        p = _cli(*cmd)
        assert p.exit_code == 2 and p.stderr.strip().endswith("refusing to overwrite an input"), p.output
        assert trace.read_bytes() == data


# --- 4. a hostile reproducer is one line ----------------------------------------------------


def test_hostile_reproducer_files_are_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000)
    inner = tmp_path / "inner.json"  # nesting json takes, deep inside a field
    inner.write_text('{"format": "oomactors-repro/2", "seed": 0, "schedule": [], "invariant": "x", '
                     '"config": {"machine": ' + "[" * 900 + "]" * 900 + "}}")
    big = tmp_path / "big.json"
    big.write_text('{"format": "oomactors-repro/2", "events": ["' + "x" * (9 * 1024 * 1024) + '"]}')
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    cases = {deep: "JSON nested too deeply", "/dev/zero": "larger than 8 MiB",
             big: "larger than 8 MiB", binary: "not UTF-8 text (byte 0)"}
    for path, why in cases.items():
        p = _cli("run", "--replay", str(path))
        assert p.exit_code == 2, (path, p.output)
        assert p.stderr.strip() == f"oomactors: error: {path}: not a reproducer: {why}", p.stderr
    p = _cli("run", "--replay", str(inner))
    assert p.exit_code == 2 and p.stderr.startswith(f"oomactors: error: {inner}: config") and \
        len(p.stderr.strip().splitlines()) == 1, p.stderr


# --- 5. a --cluster without a port is one line naming the forms -----------------------------


def test_cluster_addresses_without_a_port_are_one_line(pair_off):
    from oomactors.sweep import parse_cluster
    for good in ("tcp://10.0.0.1:8786", "10.0.0.1:8786", "sched.example:8786", "tls://[::1]:8786"):
        assert parse_cluster(good) == ("address", good)
    for bad in ("bogus", "127.0.0.1", "tcp://host", "host:0", "host:99999", "host:port", "tcp://:8786"):
        p = _cli("explore", str(pair_off), "--check", "oom_lock_exclusion", "--cluster", bad)
        assert p.exit_code == 2, (bad, p.output)
        assert p.stderr.strip() == (f"oomactors: error: --cluster {bad}: expected tcp://host:port, "
                                    "host:port or local:N"), p.stderr
        p = _cli("compare", str(pair_off), "--cluster", bad)
        assert p.exit_code == 2 and "expected tcp://host:port, host:port or local:N" in p.stderr


# --- 7. unknown keys and lenient entries are refused in a reproducer ------------------------


def test_unknown_keys_and_lenient_entries_are_refused(found, tmp_path):
    from oomactors.repro import seal
    good = _write(tmp_path / "good.json", found.repro)
    assert _cli("run", "--replay", good).exit_code == 1
    p = _cli("run", "--replay", _write(tmp_path / "extra.json", {**found.repro, "sead": 4}))
    assert p.exit_code == 2 and p.stderr.startswith(f"oomactors: error: {tmp_path / 'extra.json'}: sead: "
                                                    "unknown key (a reproducer has backend, checks, "), p.stderr
    digest = {**found.repro["digest"], "model2": "0" * 16}
    p = _cli("run", "--replay", _write(tmp_path / "dig.json", {**found.repro, "digest": digest}))
    assert p.exit_code == 2 and "dig.json: digest: model2: unknown key (the sealed fields are config, " in p.stderr
    entry = found.repro["schedule"][0]
    for lenient in ([entry[0], None, None, "~1"], [entry[0], None, None, -1], [entry[0], entry[1], None, 3]):
        bad = seal({**found.repro, "schedule": [lenient]})  # sealed as explore would: only the form is wrong
        p = _cli("run", "--replay", _write(tmp_path / "len.json", bad))
        assert p.exit_code == 2, (lenient, p.output)
        assert p.stderr.strip() == (f"oomactors: error: {tmp_path / 'len.json'}: schedule[0]: a lenient entry "
                                    "(no pid or point), which explore never writes: a reproducer's entries "
                                    "are [index, pid, point, action]")


# --- 8. the model digest: a stale reproducer does not pass ----------------------------------


def test_a_reproducer_from_another_model_says_so_and_does_not_pass(found, tmp_path):
    from oomactors.repro import MODEL_SOURCES, model_digest, seal
    here = model_digest()
    assert found.repro["model"] == here and len(here) == 16
    assert found.repro["digest"]["model"]  # sealed like the other replay-deciding fields
    assert {"oomactors/kernel/", "oomactors/stepper.py", "oomactors/sched.py"} <= set(MODEL_SOURCES)
    # the same model: reproduced, exit 1; held (fixed by a kernel fix), exit 0
    good = _write(tmp_path / "good.json", found.repro)
    p = _cli("run", "--replay", good)
    assert p.exit_code == 1 and "different model" not in p.stderr
    fixed = seal({**found.repro, "fixes": {"oom_lock": True}})
    p = _cli("run", "--replay", _write(tmp_path / "fixed.json", fixed))
    assert p.exit_code == 0 and "held: the violation" in p.stderr, p.output
    # another model: said, and not reproducing is exit 2 (not a passing 'held')
    other = "0123456789abcdef"
    p = _cli("run", "--replay", _write(tmp_path / "old.json", seal({**found.repro, "model": other})))
    assert p.exit_code == 1
    assert f"note: {tmp_path / 'old.json'} was recorded with a different model (digest {other}, this is {here})" \
        in p.stderr
    p = _cli("run", "--replay", _write(tmp_path / "oldfixed.json", seal({**fixed, "model": other})))
    assert p.exit_code == 2, p.output
    assert p.stderr.strip().splitlines()[-1] == (
        f"oomactors: error: {tmp_path / 'oldfixed.json'}: recorded with a different model "
        f"(digest {other}, this is {here}): regenerate the reproducer")
    # an edited model field is caught by the seal; a file without one is refused
    p = _cli("run", "--replay", _write(tmp_path / "edit.json", {**found.repro, "model": other}))
    assert p.exit_code == 2 and "edit.json: model: edited since" in p.stderr
    no_model = {k: v for k, v in found.repro.items() if k != "model"}
    p = _cli("run", "--replay", _write(tmp_path / "none.json", no_model))
    assert p.exit_code == 2 and "none.json: model: missing" in p.stderr


# --- 9. a pick in the wrong form says which form goes where ---------------------------------


def test_pick_forms_in_the_wrong_entry_say_which_form_is_allowed_where():
    from oomactors.errors import InputError
    from oomactors.schedule import Schedule
    with pytest.raises(InputError) as e:
        Schedule.loads("812:may_oom.locked@7=~1")
    assert str(e.value) == ("schedule: entry 0 '812:may_oom.locked@7=~1': ~1 is the lenient form (INDEX=~J: the "
                            "J-th other actor offered); a full entry (INDEX:POINT@PID=...) names the actor that "
                            "runs first as >N (actor N)")
    with pytest.raises(InputError) as e:
        Schedule.loads("812=>3")
    assert str(e.value) == ("schedule: entry 0 '812=>3': >3 names actor N, which only a full entry "
                            "(INDEX:POINT@PID=>N) can do; a lenient entry (INDEX=...) picks the J-th other actor "
                            "offered as ~J (J >= 1)")
    with pytest.raises(InputError, match=r"~0: ~J counts the other actors offered from 1"):
        Schedule.loads("812=~0")
    with pytest.raises(InputError, match=r"schedule\[0\]: ~2 is the lenient form"):
        Schedule.from_json([[812, 7, "may_oom.locked", "~2"]])
    assert Schedule.loads("812=~2; 900:oom.scan@7=>12").dumps() == "812=~2; 900:oom.scan@7=>12"


# --- 10. --shrink-budget is a bound on shrinking runs; the confirming replay is not one -----


def test_shrink_budget_bounds_the_shrinking_runs(found, pair_off, tmp_path):
    for budget in (0, 1, 3):
        res = explore(PAIR, ["oom_lock_exclusion"], scheduler="pct", budget=40, seed=0, fixes=OFF,
                      vary_seed=False, shrink_budget=budget)
        assert res.violation is not None and res.shrink_runs == budget, (budget, res.shrink_runs)
        if budget == 0:  # nothing shrunk: the schedule as found is the result, and it replays
            assert res.schedule == res.found_schedule
    assert found.shrink_runs == 0 and found.as_json()["result"]["shrink_runs"] == 0
    p = _cli("explore", str(pair_off), "--check", "oom_lock_exclusion", "--scheduler", "exhaustive",
             "--depth", "1", "--budget", "400", "--out", str(tmp_path / "r.json"))
    assert p.exit_code == 1
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("schedule ("))
    assert line.startswith("schedule (1 pick, not shrunk: no schedule with fewer picks violated it): ")
    assert "shrinking" not in p.stdout


# --- 11. the output reads as the docs say ----------------------------------------------------


def test_run_numbers_and_seeds_read_as_documented(tmp_path):
    cfg = tmp_path / "seeded.toml"
    cfg.write_text("[kernel.fixes]\noom_lock = false\n" + PAIR_TEXT.replace("[run]\n", "[run]\nseed = 7\n", 1))
    p = _cli("explore", str(cfg), "--check", "oom_lock_exclusion", "--scheduler", "pct", "--budget", "60",
             "--shrink-budget", "0", "--out", str(tmp_path / "r.json"))
    assert p.exit_code == 1, p.output
    run, seed = map(int, re.search(r"violated at run (\d+) \(seed (\d+)\)", p.stdout).groups())
    assert run > 1 and seed == 7 + run - 1  # run 1 is on run.seed, run N on run.seed + N - 1
    assert json.loads((tmp_path / "r.json").read_text())["seed"] == seed
    locked = tmp_path / "locked.toml"  # oom_lock on: nothing to find, the budget ends the search
    locked.write_text(PAIR_TEXT)
    p = _cli("explore", str(locked), "--check", "oom_lock_exclusion", "--scheduler",
             "exhaustive", "--depth", "2", "--budget", "30", "-j", "1")
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("exhaustive search"))
    assert re.fullmatch(r"exhaustive search to depth 2: 30 schedules run \(1 with no pick, 29 with 1 pick\), "
                        r"\d+ pruned by partial-order reduction; cut by --budget", line), line
    doc = (Path(__file__).parent.parent / "docs" / "exploring.md").read_text()
    assert "(1 with no pick, 17 with 1 pick)" in doc and "run.seed + N - 1" in doc and "k = 4448" not in doc


# --- 12. an option the command would ignore is refused --------------------------------------


@pytest.mark.parametrize("args, line", [
    (["--scheduler", "random", "--depth", "3"],
     "--depth does nothing with --scheduler random: it is for pct and exhaustive"),
    (["--scheduler", "hypothesis", "--depth", "2"],
     "--depth does nothing with --scheduler hypothesis: it is for pct and exhaustive"),
    (["--scheduler", "pct", "--no-por"], "--por/--no-por does nothing with --scheduler pct: it is for exhaustive"),
    (["--por"], "--por/--no-por does nothing with --scheduler random: it is for exhaustive"),
    (["--scheduler", "exhaustive", "--fixed-seed"], "--fixed-seed does nothing with --scheduler exhaustive: it is "
     "for random, pct and hypothesis (exhaustive always runs run.seed)"),
    (["--scheduler", "exhaustive", "--seed", "0"], "--seed does nothing with --scheduler exhaustive: it is for "
     "random, pct and hypothesis (exhaustive draws nothing)"),
    (["--scheduler", "exhaustive", "--shrink-budget", "5"], "--shrink-budget does nothing with --scheduler "
     "exhaustive: it is for random, pct and hypothesis (exhaustive does not shrink)"),
    (["--scheduler", "exhaustive", "--shrink-budget", "100"], "--shrink-budget does nothing with --scheduler "
     "exhaustive: it is for random, pct and hypothesis (exhaustive does not shrink)"),
])
def test_options_that_would_do_nothing_are_refused(pair_off, args, line):
    p = _cli("explore", str(pair_off), "--check", "oom_lock_exclusion", *args)
    assert p.exit_code == 2, p.output
    assert p.stderr.strip() == f"oomactors: error: {line}"


def test_options_that_do_something_still_run(pair_off, tmp_path):
    out = str(tmp_path / "r.json")
    for args in (["--scheduler", "exhaustive", "--depth", "0", "--no-por"],
                 ["--scheduler", "pct", "--depth", "2", "--seed", "3", "--fixed-seed", "--budget", "2"]):
        p = _cli("explore", str(pair_off), "--check", "oom_lock_exclusion", "--out", out, *args)
        assert p.exit_code in (0, 1), (args, p.output)


def test_replay_refuses_a_schedule_seed(found, tmp_path):
    path = _write(tmp_path / "r.json", found.repro)
    p = _cli("run", "--replay", path, "--schedule-seed", "4")
    assert p.exit_code == 2
    assert p.stderr.strip() == f"oomactors: error: --schedule-seed cannot be given with --replay: {path} holds " \
                               "the schedule"


def test_no_reap_during_exit_on_a_kernel_that_promises_nothing_is_vacuous(tmp_path):
    cfg = tmp_path / "p510.toml"  # the default profile, linux-5.10: the oom_reaper reaps at once
    cfg.write_text(PAIR_TEXT)
    p = _cli("explore", str(cfg), "--check", "no_reap_during_exit", "--budget", "2", "--strict")
    assert p.exit_code == 3, p.output
    assert p.stderr.strip() == ("oomactors: warning: no run reached what no_reap_during_exit guards (a kernel "
                                "profile with OOM_REAPER_DELAY (reaper_delay_s > 0; this one reaps at once)): "
                                "the search says nothing about it")
    # a profile with the delay meets it: the warning, if any, names the reaper's branches instead
    res = explore(PAIR.model_copy(update={"kernel": PAIR.kernel.model_copy(update={"profile": "linux-6.12"})}),
                  ["no_reap_during_exit"], budget=2)
    assert res.coverage["preconditions"] == {"no_reap_during_exit": 2}
    assert "OOM_REAPER_DELAY" not in str(res.vacuous)
