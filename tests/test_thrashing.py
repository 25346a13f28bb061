"""Memory that is touched again (docs/thrashing.md): the access step, active/inactive aging,
swap-in and page-cache refaults with their IO waits, workingset counters, and the PSI
stalls of thrashing -- read from the events and results of runs built for each mechanism.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest

from helpers import events, where
from oomactors.config import Config, parse_config
from oomactors.errors import ConfigError
from oomactors.kernel.lru import inactive_is_low
from oomactors.kernel.task import MM, PAGE_SIZE
from oomactors.machine import Machine

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = tomllib.loads((ROOT / "configs/thrashing.toml").read_text())


def variant(**tasks: dict) -> Config:
    data = copy.deepcopy(SHIPPED)
    for name, patch in tasks.items():
        next(t for t in data["tasks"] if t["name"] == name).update(patch)
    return Config.model_validate(data)


def system_psi(result, path: str = "/") -> list[dict]:
    return where(events(result, "sim:psi"), path=path)


def mm_of(result, comm: str) -> MM:
    return next(t.mm for t in result.machine.tasks.values() if t.comm == comm)


@pytest.fixture(scope="module")
def thrashing(simulate):
    return simulate("configs/thrashing.toml")


def test_full_stall_rises_while_thrashing_before_the_kernel_kills(thrashing):
    r = thrashing
    kills = events(r, "sim:oom_kill")
    assert [k["comm"] for k in kills] == ["batch"]           # one kill, the largest
    kill_t = kills[0]["t"]
    swapins = where(events(r, "sim:io_wait"), why="swapin")
    assert swapins and swapins[0]["t"] < kill_t - 5 * r.hz   # thrashing for seconds first
    before = [p for p in system_psi(r) if p["t"] < kill_t]
    calm = [p for p in before if p["t"] <= swapins[0]["t"]]
    assert calm and all(p["full_total"] == 0 and p["full_avg10"] == 0 for p in calm)
    thrash = [p for p in before if p["t"] > swapins[0]["t"]]
    # full pressure climbs through the thrashing window: avg10 above 40% before the kill,
    # rising from sample to sample until then, and the stall total grows at every sample
    assert max(p["full_avg10"] for p in thrash) > 4000
    rising = [p["full_avg10"] for p in thrash]
    assert rising == sorted(rising) and rising[-1] > rising[0]
    totals = [p["full_total"] for p in thrash]
    assert all(b > a for a, b in zip(totals, totals[1:]))
    # "some" is at least "full", both from the same stalls
    assert all(p["some_total"] >= p["full_total"] for p in before)


def test_the_stall_is_the_refaults(simulate, thrashing):
    """The same machine whose services touch their sets once: the batch job still fills RAM
    and swap and is killed, but nothing is faulted back, so full pressure stays small."""
    once = simulate(variant(db={"program": [{"op": "access", "size": "500MiB", "repeat": 1},
                                             {"op": "sleep", "time": "100s"}]},
                            web={"program": [{"op": "access", "size": "400MiB", "repeat": 1},
                                              {"op": "sleep", "time": "100s"}]}))
    assert [k["comm"] for k in events(once, "sim:oom_kill")] == ["batch"]
    assert once.machine.vmstat["pswpin"] == 0
    assert not where(events(once, "sim:io_wait"), why="swapin")

    def full_before_kill(r, path):
        kill_t = events(r, "sim:oom_kill")[0]["t"]
        return max(p["full_total"] for p in where(events(r, "sim:psi"), path=path) if p["t"] < kill_t)
    # the services' own group stalls only while they wait for their pages to come back
    assert full_before_kill(once, "/services") == 0
    assert full_before_kill(thrashing, "/services") > 5_000_000       # us: over 5 s
    # system-wide, reclaim stalls (kswapd, the batch job) come on top of that
    assert full_before_kill(thrashing, "/") > 1.5 * full_before_kill(once, "/")


def test_refault_counters(thrashing):
    v = thrashing.machine.vmstat
    # every swap-in found the shadow its eviction left in the swap cache
    assert v["pswpin"] == v["workingset_refault_anon"] > 10_000
    assert 0 < v["workingset_restore_anon"] <= v["workingset_activate_anon"] < v["workingset_refault_anon"]
    assert v["pgmajfault"] == v["pswpin"]
    assert v["pgactivate"] > 0 and v["pgdeactivate"] > 0
    assert v["workingset_refault_file"] == 0              # no page cache was read back
    waits = where(events(thrashing, "sim:io_wait"), why="swapin")
    assert sum(w["pages"] for w in waits) == v["pswpin"]


def test_memory_stat_counts_the_refaults_of_its_pages(thrashing):
    """memory.stat of /services: every refault was one of its services' pages; the root
    cgroup's file shows the machine's counters."""
    from oomactors.userspace import cgroup_info
    m = thrashing.machine
    services = cgroup_info(m, m.memcgs["/services"]).stat
    root = cgroup_info(m, m.root_mem_cgroup).stat
    assert services.workingset_refault_anon == root.workingset_refault_anon \
        == m.vmstat["workingset_refault_anon"] > 0
    assert services.workingset_refault_file == 0


HOT_COLD = """
[machine]
cpus = 2
memory = "512MiB"
swap = "512MiB"
dma = "0"   # tuned without ZONE_DMA

[run]
duration = "12s"

[[tasks]]
name = "cold"
program = [{ op = "alloc", size = "100MiB" }, { op = "sleep", time = "100s" }]

[[tasks]]
name = "hot"
program = [{ op = "access", size = "150MiB", rate = "300MiB/s" }]

[[tasks]]
name = "warm"
start = "1s"
program = [{ op = "access", size = "150MiB", repeat = 1 }, { op = "sleep", time = "100s" }]

[[tasks]]
name = "grow"
start = "3s"
program = [{ op = "access", size = "250MiB", rate = "50MiB/s", repeat = 1 }, { op = "sleep", time = "100s" }]
"""


def test_a_retouched_working_set_outlives_untouched_memory(simulate):
    """cold allocates 100MiB and never touches it again; hot sweeps 150MiB for ever; warm
    faults 150MiB in a second later and stops; grow then needs 250MiB more than is left.
    By age alone hot would go before warm -- with aging, hot's pages are referenced again
    after every deactivation and stay, while warm's, once deactivated, are swapped out.
    Untouched memory goes first of all."""
    r = simulate(parse_config(HOT_COLD))
    hot, warm, cold = mm_of(r, "hot"), mm_of(r, "warm"), mm_of(r, "cold")
    assert cold.swapents == 100 * 256 and cold.rss_anon == 0
    assert warm.swapents > 10_000
    assert hot.swapents * 20 < warm.swapents and hot.rss_anon > 0.98 * 150 * 256
    v = r.machine.vmstat
    assert v["pgactivate"] > 0 and v["pgdeactivate"] > 0


SWAPIN = """
[machine]
cpus = 2
memory = "512MiB"
swap = "1GiB"
swap_bandwidth = "100MiB/s"

[run]
duration = "30s"

[[tasks]]
name = "sweeper"
program = [{ op = "access", size = "200MiB", rate = "20MiB/s", repeat = 2 }, { op = "exit" }]

[[tasks]]
name = "hog"
start = "1s"
program = [{ op = "access", size = "350MiB", repeat = 1 }, { op = "sleep", time = "100s" }]
"""


def test_a_swapped_page_faulted_back_waits_for_the_swap_device(simulate):
    """The sweeper touches 200MiB every 10 s; the hog's 350MiB push part of it to swap while
    it is not looking; the next sweep reads those pages back, waiting for the device."""
    r = simulate(parse_config(SWAPIN))
    waits = where(events(r, "sim:io_wait"), why="swapin")
    sweeper = where(events(r, "sim:task_new"), comm="sweeper")[0]["pid"]
    assert waits and {w["pid"] for w in waits} == {sweeper}
    hz = r.hz
    bw = 100 * 1024 * 1024
    for w in waits:
        # at least the device time for its own pages (more when it queued behind others)
        assert w["jiffies"] >= -(-w["pages"] * PAGE_SIZE * hz // bw) >= 1
    v = r.machine.vmstat
    assert sum(w["pages"] for w in waits) == v["pswpin"] > 1000
    # the pages read back left the swap: what the sweeper still has there is what it
    # did not touch again before exiting
    assert v["pswpin"] <= v["pswpout"]
    # the waits were spent asleep in the fault, the scheduling point fault.io_wait
    assert r.machine.sched.point_hits["fault.io_wait"] == len(waits)


REREAD = """
[machine]
cpus = 2
memory = "256MiB"
writeback_bandwidth = "50MiB/s"

[run]
duration = "10s"

[[tasks]]
name = "reader"
program = [{ op = "access", kind = "file", size = "80MiB", rate = "80MiB/s" }]

[[tasks]]
name = "hog"
start = "2s"
program = [{ op = "alloc", size = "170MiB" }, { op = "sleep", time = "100s" }]
"""


def test_page_cache_refaults_read_the_disk_and_activate(simulate):
    """No swap: the hog's memory can only come from the reader's page cache.  What the
    reader reads again after eviction is a refault: counted, read from disk (why=refault),
    and activated when its refault distance fits the working set."""
    r = simulate(parse_config(REREAD))
    v = r.machine.vmstat
    refaults = where(events(r, "sim:io_wait"), why="refault")
    assert refaults and v["workingset_refault_file"] > 0
    assert sum(w["pages"] for w in refaults) == v["workingset_refault_file"]
    assert v["workingset_activate_file"] > 0
    assert v["workingset_restore_file"] <= v["workingset_activate_file"] <= v["workingset_refault_file"]
    # first reads of the set went to the disk too (why=read), before any refault
    reads = where(events(r, "sim:io_wait"), why="read")
    assert sum(w["pages"] for w in reads) >= 80 * 256
    assert v["pgmajfault"] == sum(w["pages"] for w in reads + refaults)
    assert not events(r, "sim:oom_kill")


def test_inactive_is_low_ratios():
    """inactive_is_low: 1:1 below 1 GiB of the pair, then sqrt(10 * GiB)."""
    gib = 1 << 18  # pages
    assert inactive_is_low(99, 100) and not inactive_is_low(100, 100)
    # 1 GiB: ratio 3 (int_sqrt(10))
    assert not inactive_is_low(gib // 4, 3 * gib // 4)
    assert inactive_is_low(gib // 4 - 1000, 3 * gib // 4 + 1000)
    # 10 GiB: ratio 10
    assert not inactive_is_low(gib, 9 * gib) and inactive_is_low(gib - gib // 10, 9 * gib + gib // 10)


def test_refault_distance_decides_activation():
    """workingset_refault activates a page only if fewer pages were evicted or activated
    since its eviction than the working set could have held."""
    from oomactors.kernel import workingset as W
    m = Machine(parse_config('[machine]\nmemory = "1GiB"\nswap = "1GiB"'))
    a, b = MM(len(m.zones)), MM(len(m.zones))
    zone = m.zones[-1]
    W.workingset_eviction(m, a, 100, zone, 40, "anon")      # 40 had been active
    assert W.workingset_size(m, 0, False) == 0                 # nothing resident yet
    W.workingset_eviction(m, b, 1000, zone, 0, "anon")         # the clock moves 1000 on
    refaults, activated, restored = W.workingset_refault(m, a, 100, "anon")
    assert (refaults, activated, restored) == (100, 0, 0)     # too far: not activated
    W.workingset_eviction(m, a, 50, zone, 50, "anon")
    assert W.workingset_refault(m, a, 80, "anon") == (50, 50, 50)   # only 50 shadows
    v = m.vmstat
    assert (v["workingset_refault_anon"], v["workingset_activate_anon"], v["workingset_restore_anon"]) \
        == (150, 50, 50)


@pytest.mark.parametrize("step, message", [
    ('{op="access", size="0"}', "tasks[0].program[0].size: must be greater than 0"),
    ('{op="access", size="1MiB", kind="dirty"}', "tasks[0].program[0].kind: expected 'anon', 'file' or 'shmem'"),
    ('{op="access", size="1MiB", repeat=0}', "tasks[0].program[0].repeat: must be at least 1"),
    ('{op="access", size="1MiB", rate="0/s"}', "tasks[0].program[0].rate: must be greater than 0"),
    ('{op="access", size="1MiB", sweeps=2}', "tasks[0].program[0].sweeps: unknown key"),
])
def test_access_step_validation(step, message):
    with pytest.raises(ConfigError) as e:
        parse_config(f'[[tasks]]\nname = "a"\nprogram = [{step}]', "x.toml")
    assert str(e.value) == f"x.toml: {message}"
