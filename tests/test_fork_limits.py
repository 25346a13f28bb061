"""Fork limits: what a task costs the kernel, and where fork says -EAGAIN (pid_max,
threads-max, RLIMIT_NPROC).  A fork bomb ends as it ends on a real machine: -EAGAIN for a
user, the OOM killer for root with the limits raised -- and the run itself ends."""

from __future__ import annotations

import pytest

from helpers import events
from oomactors import sim
from oomactors.config import parse_config
from oomactors.invariants import page_conservation
from oomactors.errors import ConfigError
from oomactors.kernel.fork import THREAD_SIZE, pid_max_default, set_max_threads
from oomactors.machine import Machine

EAGAIN = 11
BOMB = """
[machine]
memory = "32MiB"
cpus = 2
[kernel]
oom_dump_tasks = 0
{kernel}
[run]
duration = "{duration}"
[[tasks]]
name = "bomb"
uid = {uid}
program = [ {{ op = "repeat", steps = [ {{ op = "fork", program = [
    {{ op = "repeat", steps = [ {{ op = "fork" }} ] }} ] }} ] }} ]
"""


def _bomb(uid: int, kernel: str = "", duration: str = "300ms"):
    return parse_config(BOMB.format(uid=uid, kernel=kernel, duration=duration))


def _peak_live(r) -> int:
    live = peak = 0
    for e in events(r, "sim:task_new", "sched:sched_process_exit"):
        live += 1 if e["event"] == "sim:task_new" else -1
        peak = max(peak, live)
    return peak


def test_defaults_follow_the_kernel():
    m = Machine(parse_config('[machine]\nmemory = "2GiB"\ncpus = 4'))
    assert m.pid_max == 32768 and pid_max_default(64) == 65536
    assert m.max_threads == m.totalram_pages * 4096 // (8 * THREAD_SIZE) == set_max_threads(m.totalram_pages, 4096)
    assert m.nproc_rlimit == m.max_threads // 2


def test_a_user_fork_bomb_hits_rlimit_nproc_and_the_run_ends(simulate):
    r = simulate(_bomb(1000))
    m = r.machine
    assert r.reason == "duration"
    fails = [e for e in events(r, "sim:step_failed") if e["op"] == "fork"]
    assert fails and {e["errno"] for e in fails} == {EAGAIN}
    # the user's tasks never outnumber RLIMIT_NPROC (threads-max / 2: 126 on 32 MiB)
    assert m.nproc_rlimit == m.max_threads // 2 == 126
    users = {e["pid"] for e in events(r, "sim:task_new") if e["comm"] == "bomb"}
    assert len(users) >= m.nproc_rlimit
    peak = _peak_live(r)
    kthreads = len(events(r, "sim:task_new")) - len(users)
    assert peak - kthreads == m.nproc_rlimit
    assert not events(r, "oom:mark_victim")


def test_threads_max_stops_root(simulate):
    r = simulate(_bomb(0, "threads_max = 100"))
    assert {e["errno"] for e in events(r, "sim:step_failed")} == {EAGAIN}
    assert _peak_live(r) == 100


def test_a_root_fork_bomb_without_limits_runs_the_machine_out_of_memory():
    # a thousand live tasks: the per-event checkers (whose cost grows with the number of
    # mms) would take minutes, so the books are checked once, at the end
    r = sim.run(_bomb(0, "threads_max = 100000"), env_checks=False, keep_records=True)
    page_conservation(r.machine, r.records[-1])
    assert r.reason == "duration"
    # task structures and kernel stacks filled the machine: the OOM killer came
    assert events(r, "sim:out_of_memory_enter") and events(r, "oom:mark_victim")
    m = r.machine
    kmem = sum(z.nr["kernel"] for z in m.zones)
    assert kmem >= 4 * (m.nr_threads - 10)  # a 16 KiB stack for (nearly) every task alive


def test_pids_wrap_below_pid_max_and_are_reused(simulate):
    cfg = parse_config("""
[kernel]
pid_max = 400
[run]
duration = "2s"
[[tasks]]
name = "loop"
program = [ { op = "repeat", times = 500, steps = [ { op = "fork", comm = "child" } ] } ]
""")
    r = simulate(cfg)
    pids = [e["pid"] for e in events(r, "sim:task_new") if e["comm"] == "child"]
    assert len(pids) == 500 and max(pids) == 399
    wrapped = pids[pids.index(399) + 1:]
    assert wrapped and all(300 <= p < 400 for p in wrapped)
    # every child exited at once: its kernel memory went back
    m = r.machine
    assert m.nr_threads == len(m.pids_in_use)
    assert not any(t.kmem for t in m.tasks.values() if t.dead)


@pytest.mark.parametrize("text, msg", [
    ("[kernel]\npid_max = 100", "x.toml: kernel.pid_max: expected an integer from 301 to 4194304"),
    ('[kernel]\nthreads_max = "many"', "x.toml: kernel.threads_max: expected an integer from 20 to"),
])
def test_limits_are_validated(text, msg):
    with pytest.raises(ConfigError, match="^" + msg.replace(".", r"\.")):
        parse_config(text, "x.toml")
