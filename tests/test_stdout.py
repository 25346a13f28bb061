"""Standard output that fails or goes away, on real ``oomactors`` processes.

* stdout on a full device (/dev/full: ENOSPC on every write) is where the output was
  sent, not a bug: one line ``oomactors: error: standard output: ...``, exit 2, and a
  trace being written ends readable, with its end-of-run mark.
* stdout closed by its reader (``| head``) is quiet, but keeps a result's exit status
  (explore: 1 when a violation was found), and a run ends when its reader goes, not at
  its next write.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from oomactors.trace.stream import read_trace

ROOT = Path(__file__).resolve().parent.parent
QUICK = str(ROOT / "configs" / "quickstart.toml")
RACE = str(ROOT / "configs" / "parallel-oom.toml")
FULL = "oomactors: error: standard output: No space left on device\n"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "OOMACTORS_INVARIANTS"}  # speed only


def _to_dev_full(*args: str) -> subprocess.CompletedProcess:
    with open("/dev/full", "w") as full:
        return subprocess.run([sys.executable, "-m", "oomactors", *args], cwd=ROOT, stdout=full,
                              stderr=subprocess.PIPE, env=_env(), timeout=300)


@pytest.fixture(scope="module")
def shown(tmp_path_factory):
    path = tmp_path_factory.mktemp("stdout") / "q.trace"
    p = subprocess.run([sys.executable, "-m", "oomactors", "run", QUICK, "--json", "--trace", str(path)],
                       cwd=ROOT, capture_output=True, env=_env(), timeout=300)
    assert p.returncode == 0, p.stderr
    return str(path)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [
    ["run", QUICK], ["run", QUICK, "--json"], ["trace", "show", "{shown}"],
    ["trace", "show", "{shown}", "--json"],
    ["explore", RACE, "--check", "oom_lock_exclusion", "--budget", "2", "-j", "1"],
])
def test_stdout_on_a_full_device_is_one_line_and_exit_2(args, shown, tmp_path):
    args = [a.format(shown=shown) for a in args]
    if args[0] == "explore":
        args += ["--out", str(tmp_path / "found.json")]
    p = _to_dev_full(*args)
    assert (p.returncode, p.stderr.decode()) == (2, FULL)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_run_whose_stdout_fails_leaves_a_readable_marked_trace(tmp_path):
    trace = tmp_path / "cut.trace"
    p = _to_dev_full("run", QUICK, "--trace", str(trace))
    assert (p.returncode, p.stderr.decode()) == (2, FULL)
    tr = read_trace(trace)
    recs = list(tr.records())
    # the console text failed at the first OOM report: the run was cut short there
    assert tr.ending().startswith("interrupted at t=")
    assert tr.names[recs[-1][1]] == "sim:run_end" and recs[-1][4] == "interrupted"
    assert all(r[0] <= recs[-1][0] for r in recs)


def _stdout_closed_at_once(*args: str) -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose reader has gone before anything is written."""
    proc = subprocess.Popen([sys.executable, "-m", "oomactors", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())
    proc.stdout.close()
    err = proc.stderr.read()
    return subprocess.CompletedProcess(args, proc.wait(timeout=300), None, err)


@pytest.mark.parametrize("config,check,status", [
    (str(ROOT / "configs" / "races" / "oom_lock.toml"), "single_pending_victim", 1),  # found
    (RACE, "oom_lock_exclusion", 0),                                                # clean
])
def test_explore_through_a_closed_pipe_keeps_its_result_status(config, check, status, tmp_path):
    """A closed stdout is quiet, but it does not hide the result: a violation found (and
    its reproducer written) is exit 1 as on a terminal, a clean search 0 -- also when the
    reproducer itself goes to the closed pipe (it was 'cannot write reproducer: Broken
    pipe', exit 2)."""
    out = tmp_path / "found.json"
    args = ("explore", config, "--check", check, "--fixed-seed", "--budget", "20", "-j", "1", "--out")
    p = _stdout_closed_at_once(*args, str(out))
    assert (p.returncode, p.stderr) == (status, b"")
    assert out.exists() == (status == 1)
    p = _stdout_closed_at_once(*args, "/dev/stdout")
    assert (p.returncode, p.stderr) == (status, b"")


@pytest.mark.parametrize("take", [None, 1])
def test_a_long_run_ends_when_the_reader_of_its_stdout_goes(take, tmp_path):
    """``run long.toml | head -1``: the run ends when head does, not at its next write
    (with --json the only write is the summary, 10,000 simulated hours away): exit 0,
    nothing on stderr, the trace readable and marked where the run was cut short."""
    long = tmp_path / "long.toml"
    long.write_text(Path(QUICK).read_text().replace('duration = "20s"', 'duration = "10000h"'))
    trace = tmp_path / "long.trace"
    args = [sys.executable, "-m", "oomactors", "run", str(long), "--trace", str(trace)]
    proc = subprocess.Popen(args + (["--json"] if take is None else []), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())
    if take:
        assert proc.stdout.readline()
    proc.stdout.close()
    try:
        status = proc.wait(timeout=120)  # a run that goes on is a hang, not a slow exit
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the run went on after the reader of its stdout had gone")
    assert (status, proc.stderr.read()) == (0, b"")
    tr = read_trace(trace)
    recs = list(tr.records())
    assert tr.ending().startswith("interrupted at t=")
    assert tr.names[recs[-1][1]] == "sim:run_end" and recs[-1][4] == "interrupted"


LOG = str(ROOT / "tests" / "data" / "oom_reports" / "linux-next-5.8-two-reports.log")


@pytest.mark.parametrize("args", [
    # a file argument that is stdout: the table or trace goes into the closed pipe
    ["trace", "export", "{shown}", "--format", "csv", "-o", "/dev/stdout"],
    ["trace", "export", "{shown}", "--format", "parquet", "-o", "/dev/stdout"],
    ["trace", "export", "{shown}", "--format", "perfetto", "-o", "/dev/stdout"],
    ["trace", "export", "{shown}", "--format", "csv", "-o", "/dev/fd/1"],
    ["trace", "export", "{shown}", "--format", "csv", "-o", "-"],
    ["trace", "export", "{shown}", "--format", "parquet", "-o", "-"],
    ["run", QUICK, "--trace", "-"], ["run", QUICK, "--trace", "/dev/stdout"],
    ["run", QUICK, "--perfetto", "/dev/stdout"],
    # printed before any command runs (click's own handling would exit 1)
    ["--help"], ["--version"], ["trace", "--help"],
    # every other command that prints
    ["trace", "show", "{shown}", "--format", "ftrace"], ["trace", "show", "{shown}", "--header"],
    ["trace", "stats", "{shown}"], ["trace", "stats", "{shown}", "--json"],
    ["replay", LOG], ["replay", LOG, "--json"], ["validate", QUICK], ["policies", "--json"],
    ["compare", QUICK, "--seeds", "1", "-j", "1"], ["compare", QUICK, "--seeds", "1", "-j", "1", "--json"],
])
def test_every_command_into_a_closed_pipe_ends_quietly_with_exit_0(args, shown):
    """The reader of stdout has gone before the first byte (``| head -0``): exit 0, no word
    on stderr -- also where stdout is reached through a file argument (``-o /dev/stdout``),
    which used to be 'cannot write: Broken pipe' and exit 2."""
    p = _stdout_closed_at_once(*(a.format(shown=shown) for a in args))
    assert (p.returncode, p.stderr.decode()) == (0, "")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "perfetto"])
def test_export_to_stdout_read_in_part_ends_quietly(fmt, shown):
    """``trace export T --format F -o /dev/stdout | head -c 4096``: the reader goes part way
    through the table (each format's output is well over a pipe's 64 KiB buffer)."""
    proc = subprocess.Popen([sys.executable, "-m", "oomactors", "trace", "export", shown, "--format", fmt,
                             "-o", "/dev/stdout"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env())
    got = proc.stdout.read(4096)
    proc.stdout.close()
    err = proc.stderr.read()
    assert len(got) == 4096 and (proc.wait(timeout=120), err) == (0, b"")
    if fmt == "csv":
        assert got.startswith(b"t,")


def test_export_to_dash_is_standard_output(shown, tmp_path):
    """``-o -`` is standard output, as for ``run --trace -``, not a file named "-": the same
    bytes as ``-o FILE``; a binary format is refused on a terminal; without --format the
    format cannot be told."""
    ref = tmp_path / "ref.csv"
    base = [sys.executable, "-m", "oomactors", "trace", "export", shown]
    subprocess.run([*base, "-o", str(ref)], cwd=tmp_path, check=True, capture_output=True, env=_env())
    p = subprocess.run([*base, "--format", "csv", "-o", "-"], cwd=tmp_path, capture_output=True, env=_env())
    assert (p.returncode, p.stderr) == (0, b"-: csv\n")
    assert p.stdout == ref.read_bytes()
    assert not (tmp_path / "-").exists()
    p = subprocess.run([*base, "-o", "-"], cwd=tmp_path, capture_output=True, env=_env())
    assert (p.returncode, p.stderr.decode()) == (2, "oomactors: error: -: cannot tell the export format from "
                                                     "the extension; give --format (perfetto, parquet, csv)\n")
    import pty
    leader, follower = pty.openpty()
    try:
        p = subprocess.run([*base, "--format", "parquet", "-o", "-"], cwd=tmp_path, stdout=follower,
                           stderr=subprocess.PIPE, env=_env(), timeout=120)
    finally:
        os.close(follower)
        os.close(leader)
    assert (p.returncode, p.stderr.decode()) == (2, "oomactors: error: -o -: refusing to write a binary parquet "
                                                     "file to a terminal (redirect it: -o - > out.parquet)\n")
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("dest", ["/dev/stdout", "/dev/fd/1"])
def test_export_to_a_redirected_stdout_appends_where_the_shell_said(dest, shown, tmp_path):
    """``trace export T --format csv -o /dev/stdout >> log``: the lines already in ``log``
    stay and the table follows them -- the name reaches the shell's open descriptor, so
    it is written in place, not replaced by a renamed temporary file."""
    ref = tmp_path / "ref.csv"
    base = [sys.executable, "-m", "oomactors", "trace", "export", shown, "--format", "csv"]
    subprocess.run([*base, "-o", str(ref)], cwd=tmp_path, check=True, capture_output=True, env=_env())
    log = tmp_path / "log"
    log.write_bytes(b"earlier line\n")
    with open(log, "ab") as out:
        p = subprocess.run([*base, "-o", dest], cwd=tmp_path, stdout=out, stderr=subprocess.PIPE, env=_env())
    assert (p.returncode, p.stderr.decode()) == (0, f"{dest}: csv\n")
    assert log.read_bytes() == b"earlier line\n" + ref.read_bytes()
    assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".part")] == []
