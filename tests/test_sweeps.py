"""compare and explore on several cores and on a real Dask cluster: the same bytes out.

A ``--cluster local:2`` run starts a real ``dask.distributed.LocalCluster`` of two worker
processes; the ``--cluster ADDRESS`` runs use a LocalCluster started for this module (by
oomactors' own helper, ``python -m oomactors.sweep --local-cluster 2``) as an existing
scheduler, as a user's would be.  Each output is compared byte for byte with ``--jobs 1``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from oomactors import interrupt
from oomactors.cli import main
from oomactors.errors import InputError
from oomactors.sweep import Sweep, cores, parse_cluster, resolve_jobs

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent
QUICK = str(ROOT / "configs" / "quickstart.toml")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_explore import RACE  # noqa: E402


def oomactors(*args: str, check_status: int | None = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OOMACTORS_INVARIANTS"}  # speed only
    p = subprocess.run([sys.executable, "-m", "oomactors", *args], cwd=ROOT, capture_output=True, env=env,
                       timeout=600)
    if check_status is not None:
        assert p.returncode == check_status, p.stderr.decode()
    return p


@pytest.fixture(scope="module")
def scheduler():
    """The address of a running LocalCluster of two worker processes."""
    proc = subprocess.Popen([sys.executable, "-m", "oomactors.sweep", "--local-cluster", "2"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    address = proc.stdout.readline().decode().strip()
    assert address.startswith("tcp://")
    yield address
    proc.stdin.close()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_compare_gives_the_same_bytes_on_one_core_two_cores_and_dask_clusters(scheduler):
    args = ("compare", QUICK, "--policy", "linux", "--policy", "largest-rss", "--seeds", "2")
    one = oomactors(*args, "--json", "-j", "1").stdout
    data = json.loads(one)
    assert [p["policy"] for p in data["configs"][0]["policies"]] == ["linux", "largest-rss"]
    assert all(len(p["runs"]) == 2 for p in data["configs"][0]["policies"])
    assert oomactors(*args, "--json", "-j", "2").stdout == one
    assert oomactors(*args, "--json", "--cluster", "local:2").stdout == one
    assert oomactors(*args, "--cluster", scheduler).stdout == oomactors(*args, "-j", "1").stdout


def test_explore_finds_and_shrinks_the_same_violation_anywhere(scheduler, tmp_path):
    """The first violation in search order (search seed 0, as test_explore's since the
    stepper), whichever run of a batch
    finishes first; the same shrunk schedule and the same reproducer bytes."""
    cfg = tmp_path / "race.toml"
    cfg.write_text(RACE + "[kernel.fixes]\noom_lock = false\n")
    outs = {}
    for how in (["-j", "1"], ["-j", "2"], ["--cluster", scheduler]):
        out = tmp_path / f"repro-{how[-1].replace('/', '_').replace(':', '_')}.json"
        p = oomactors("explore", str(cfg), "--check", "oom_lock_exclusion,page_conservation", "--budget", "60",
                      "--seed", "0", "--out", str(out), "--json", *how, check_status=1)
        doc = json.loads(p.stdout)
        doc.pop("seconds")  # wall time
        doc["result"].pop("repro"), doc["result"].pop("reproduce")
        outs[how[0] + how[-1]] = (doc, out.read_bytes())
    first = next(iter(outs.values()))
    assert first[0]["result"]["found_at_run"] == first[0]["runs"] > 1 and first[0]["result"]["shrink_runs"] > 0
    for got in outs.values():
        assert got == first


def _fails_on(unit: int) -> int:
    if unit in (5, 3):
        raise InputError(f"unit {unit} is bad")
    return unit * unit


@pytest.mark.parametrize("where", [{"jobs": 1}, {"jobs": 2}])
def test_map_keeps_unit_order_and_raises_the_first_failure_in_that_order(where):
    with Sweep(**where) as sweep:
        assert sweep.map(_fails_on, [4, 2, 1, 0]) == [16, 4, 1, 0]
        with pytest.raises(InputError, match="unit 3 is bad"):
            sweep.map(_fails_on, [0, 1, 3, 2, 5, 6])


def test_map_stops_on_the_flag():
    interrupt.request()
    try:
        with pytest.raises(KeyboardInterrupt):
            Sweep(1).map(_fails_on, [1, 2])
    finally:
        interrupt.clear()


def test_jobs_and_cluster_options():
    n = cores()
    assert resolve_jobs(None) == (n, None)
    assert resolve_jobs(1) == (1, None)
    assert resolve_jobs(n + 5) == (n, f"--jobs {n + 5} capped at {n}, the number of cores")
    for bad in (0, -3):
        with pytest.raises(InputError, match=f"--jobs must be at least 1, not {bad}"):
            resolve_jobs(bad)
    assert parse_cluster("local:4") == ("local", 4)
    assert parse_cluster("tcp://10.0.0.1:8786") == ("address", "tcp://10.0.0.1:8786")
    for bad in ("local:0", "local:x", "", "a b"):
        with pytest.raises(InputError, match="--cluster"):
            parse_cluster(bad)


@pytest.mark.parametrize("args, line", [
    (["-j", "0"], "oomactors: error: --jobs must be at least 1, not 0"),
    (["-j", "-2"], "oomactors: error: --jobs must be at least 1, not -2"),
    (["--cluster", "local:0"], "oomactors: error: --cluster local:0: local:N needs N worker processes, 1 to 1024"),
    (["-j", "2", "--cluster", "local:2"],
     "oomactors: error: --jobs and --cluster exclude each other: the cluster's workers decide"),
])
def test_bad_sweep_options_are_one_line(args, line):
    for cmd in (["compare", QUICK], ["explore", QUICK, "--check", "oom_lock_exclusion"]):
        p = CliRunner().invoke(main, [*cmd, *args])
        assert p.exit_code == 2 and p.stderr.splitlines() == [line] and p.stdout == ""


def test_a_local_cluster_larger_than_the_machine_is_capped_with_a_note(monkeypatch):
    from oomactors import cli_sweep, sweep
    monkeypatch.setattr(sweep, "cores", lambda: 2)
    seen = {}
    monkeypatch.setattr(cli_sweep.click, "echo", lambda msg, err=False: seen.setdefault("note", (msg, err)))
    assert cli_sweep.jobs_option(None, "local:64") == (1, "local:2")
    assert seen["note"] == ("oomactors: note: --cluster local:64 capped at local:2, the number of cores", True)
    assert cli_sweep.jobs_option(None, "local:2") == (1, "local:2")


def test_too_many_jobs_are_capped_with_a_note():
    p = CliRunner().invoke(main, ["compare", QUICK, "--seeds", "1", "-j", "1000", "--json"])
    assert p.exit_code == 0
    assert p.stderr.splitlines() == [f"oomactors: note: --jobs 1000 capped at {cores()}, the number of cores"]
    assert json.loads(p.stdout)["configs"][0]["policies"][0]["runs"]


def test_ctrl_c_of_a_sweep_on_a_shared_cluster_stops_its_units_not_the_workers(scheduler, tmp_path):
    """Ctrl-C of `compare --cluster ADDRESS` stops its runs on the workers (at their next
    clock advance), but the workers themselves stay up for the next client: a unit ends
    with an ordinary error, not a KeyboardInterrupt that Dask treats as fatal (the worker
    process exited and its nanny restarted it)."""
    import time

    from distributed import Client

    long = tmp_path / "long.toml"
    long.write_text(Path(QUICK).read_text().replace('duration = "20s"', 'duration = "1h"'))
    with Client(scheduler, timeout="20s") as client:
        before = client.run(os.getpid)
        env = {k: v for k, v in os.environ.items() if k != "OOMACTORS_INVARIANTS"}
        proc = subprocess.Popen([sys.executable, "-m", "oomactors", "compare", str(long), "--seeds", "4",
                                 "--cluster", scheduler], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env, start_new_session=True)
        deadline = time.monotonic() + 120
        while not any(client.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(client.processing().values()), "the sweep's units never started"
        time.sleep(1.0)  # inside their runs
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        assert proc.stderr.read().decode().startswith("oomactors: interrupted")
        while any(client.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.1)  # the stopped units end at their next clock advance
        assert not any(client.processing().values()), "a stopped unit went on running"
        time.sleep(1.0)  # a worker that died would be gone (and restarted) by now
        assert client.run(os.getpid) == before
    # and the next client's sweep runs as it would anywhere
    args = ("compare", QUICK, "--seeds", "1")
    assert oomactors(*args, "--cluster", scheduler).stdout == oomactors(*args, "-j", "1").stdout
