"""What `validate` promises: a config it accepts boots and runs to a simulated outcome.
Boot-time memory that does not fit, absurd sysctls and sizes past the machine's limits are
refused in one line naming the key path (exit 2), never met later as a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from oomactors.cli import main


def _validate(tmp_path, text: str):
    p = tmp_path / "x.toml"
    p.write_text(text)
    return CliRunner().invoke(main, ["validate", str(p)], catch_exceptions=False), str(p)


@pytest.mark.parametrize("text, where", [
    ('[[tasks]]\nname = "a"\nrss = "100GiB"\n', "tasks[0].rss: 100GiB does not fit in memory at boot"),
    ('[machine]\nmemory = "1GiB"\n[[tasks]]\nname = "a"\ncount = 50\nrss = "30MiB"\n',
     "tasks[0].rss (process 33 of 50): 30MiB does not fit in memory at boot"),
    ('[machine]\nmemory = "1GiB"\nnodes = 2\n[[tasks]]\nname = "a"\nrss = "700MiB"\n'
     'mempolicy = { mode = "bind", nodes = [0] }\n', "tasks[0].rss: 700MiB does not fit in memory at boot"),
    ("[kernel]\nmin_free_kbytes = 99999999999\n", "kernel.min_free_kbytes: 99999999999 kB is more than"),
    ('[machine]\nmemory = "99999999999999999999999GiB"\n', "machine.memory: too large"),
    ('[machine]\nmemory = "65TiB"\n', "machine.memory: must be at most 64TiB"),
    ('[[tasks]]\nname = "a"\ncount = 100000\nthreads = 1024\n', "tasks: 102400000 tasks at boot, more than threads-max"),
])
def test_validate_refuses_what_cannot_boot(tmp_path, text, where):
    res, path = _validate(tmp_path, text)
    assert res.exit_code == 2
    assert res.stderr.startswith(f"oomactors: error: {path}: {where}") and res.stderr.count("\n") == 1


def test_what_validates_boots_and_runs(tmp_path):
    # at the edge: what is left after the rss fits
    res, path = _validate(tmp_path, '[machine]\nmemory = "1GiB"\n[[tasks]]\nname = "a"\ncount = 30\nrss = "30MiB"\n'
                                    '[run]\nduration = "100ms"\n')
    assert res.exit_code == 0, res.stderr
    run = CliRunner().invoke(main, ["run", path, "--json"], catch_exceptions=False)
    assert run.exit_code == 0


# --- replay: nothing of Python's leaks into the text, and every assumption is said ---
REPORT = "tests/data/oom_reports/aliyun-3.10-syslog-no-version.log"


def _replay(tmp_path, edit):
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    log = tmp_path / "r.log"
    log.write_text(edit((root / REPORT).read_text()))
    return CliRunner().invoke(main, ["replay", str(log)], catch_exceptions=False, terminal_width=200)


def test_replay_says_what_it_assumed_for_nonsense_totals(tmp_path):
    import re
    res = _replay(tmp_path, lambda t: re.sub(r" \d+ pages RAM", " 0 pages RAM", t))
    assert res.exit_code == 0
    assert "totalpages 1: RAM 0 - reserved 94167 + swap 0 = -94167, not a page: taken as 1" in res.stdout


def test_replay_prints_no_none_for_missing_fields(tmp_path):
    res = _replay(tmp_path, lambda t: t.replace("gfp_mask=0x201da, ", ""))
    assert res.exit_code == 0
    assert "None" not in res.stdout and "gfp_mask=?" in res.stdout


# --- the command line: one line per error, its own status for a bug ---
@pytest.mark.parametrize("args, text", [
    (["run", "--bogus"], "run: No such option '--bogus' (see 'oomactors run --help')"),
    (["run", "tests"], "run: Invalid value for '[CONFIG]': File 'tests' is a directory"),
    (["explore", "configs/parallel-oom.toml", "--check", "oom_lock_exclusion", "--budget", "0"],
     "explore: Invalid value for '--budget': 0 is not in the range x>=1"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["run", "--seed", str(2**64)], "run: Invalid value for '--seed'"),
    (["explore", "configs/parallel-oom.toml", "--check", "oom_lock_exclusion", "--out", "/nonexistent/x.json"],
     "/nonexistent/x.json: cannot write reproducer: no directory /nonexistent"),
])
def test_command_line_errors_are_one_line(args, text):
    import subprocess
    import sys
    from pathlib import Path
    p = subprocess.run([sys.executable, "-m", "oomactors", *args], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("oomactors: error: ") and text in p.stderr, p.stderr
    assert not p.stdout  # explore --out fails before the search, not after it


def test_a_bug_exits_70_with_one_line_and_the_traceback_in_a_file(monkeypatch):
    from oomactors import sim
    from oomactors.cli_errors import DEBUG_ENV, EXIT_INTERNAL

    def broken(*a, **kw):
        raise RuntimeError("boom")
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.setattr(sim, "run", broken)
    res = CliRunner().invoke(main, ["run", "--json"])
    assert res.exit_code == EXIT_INTERNAL == 70
    line = res.stderr
    assert line.count("\n") == 1 and line.startswith("oomactors: internal error (a bug in oomactors): "
                                                     "RuntimeError: boom; traceback in ")
    path = line.rstrip().rsplit(" ", 1)[1]
    from pathlib import Path
    assert "RuntimeError: boom" in Path(path).read_text()
    Path(path).unlink()


def test_tasks_table_says_killed_exiting_for_a_victim_still_alive():
    import json
    from oomactors.report import summarize
    from conftest import run_checked
    r = run_checked("configs/stuck-victim.toml")
    s = json.loads(json.dumps(summarize(r.records, seed=r.seed, hz=r.hz, reason=r.reason)))
    outcome = {t["comm"]: t["outcome"] for t in s["tasks"]}
    # bigdb was killed in D state and has not exited by the end; grower was killed and exited
    assert outcome["bigdb"] == "killed, exiting" and outcome["grower"] == "killed"
