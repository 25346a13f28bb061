"""Commit accounting (vm.overcommit_memory; kernel/util.py) against hand-computed numbers.

Modelled on LTP oom01 (modes 0, 1, 2) and Documentation/mm/overcommit-accounting.rst:
mode 0 refuses only a single request larger than RAM + swap, mode 1 refuses nothing, mode 2
refuses anything that would bring Committed_AS up to CommitLimit less the reserves.  A
refusal is -ENOMEM to the program, never an OOM kill.

The machines here have 1GiB of RAM: 262144 pages, 4096 reserved (memory/64), so
totalram_pages = 258048.
"""

from __future__ import annotations

import pytest

from helpers import events, pids_of, where

from oomactors import sim
from oomactors.config import parse_config
from oomactors.errors import ConfigError
from oomactors.kernel.task import MM, Signal, Task
from oomactors.kernel.util import (ENOMEM, __vm_enough_memory, vm_commit_limit, vm_enough_memory_24,
                                   vm_enough_memory_24_free)
from oomactors.report import summarize

TOTALRAM = 258048


def only(pids: list[int]) -> int:
    assert len(pids) == 1, pids
    return pids[0]


def machine(kernel: str = "", machine_: str = ""):
    cfg = parse_config(f'[machine]\nmemory = "1GiB"\n{machine_}\n[kernel]\n{kernel}\n')
    return sim.build(cfg)


def checks(result, pid=None):
    evs = events(result, "sim:vm_enough_memory")
    return evs if pid is None else where(evs, pid=pid)


# --- __vm_enough_memory and vm_commit_limit ---------------------------------------------


def test_mode_1_always_grants_and_still_charges():
    m = machine("overcommit_memory = 1")
    assert __vm_enough_memory(m, None, 10**9, False) == 0
    assert m.vm_committed_as == 10**9


def test_mode_0_refuses_only_a_single_request_larger_than_ram_plus_swap():
    m = machine("overcommit_memory = 0", 'swap = "256MiB"')  # 65536 swap pages
    limit = TOTALRAM + 65536
    assert __vm_enough_memory(m, None, limit + 1, False) == -ENOMEM
    assert m.vm_committed_as == 0  # a refusal gives its charge back
    assert __vm_enough_memory(m, None, limit, False) == 0
    # what is already committed does not matter in mode 0
    assert __vm_enough_memory(m, None, limit, False) == 0
    assert m.vm_committed_as == 2 * limit


def test_commit_limit_from_ratio_or_kbytes_plus_swap():
    swap = 'swap = "256MiB"'
    assert vm_commit_limit(machine("overcommit_ratio = 50", swap)) == 129024 + 65536
    assert vm_commit_limit(machine("overcommit_ratio = 80", swap)) == 206438 + 65536  # 258048*80//100
    # overcommit_kbytes wins when non-zero: 400000 kB = 100000 pages
    assert vm_commit_limit(machine("overcommit_ratio = 80\novercommit_kbytes = 400000", swap)) == 100000 + 65536


RESERVES = "overcommit_memory = 2\nadmin_reserve_kbytes = 8192\nuser_reserve_kbytes = 131072\n"
# CommitLimit = 258048 * 50 / 100 + 65536 = 194560; admin reserve 2048 pages; user reserve <= 32768


@pytest.mark.parametrize("admin, total_vm, allowed", [
    (True, None, 194560),                     # root, no mm: the whole CommitLimit
    (False, None, 194560 - 2048),             # the admin reserve is kept back from non-root
    (False, 64000, 194560 - 2048 - 2000),     # user reserve: total_vm / 32 ...
    (False, 2_000_000, 194560 - 2048 - 32768),  # ... at most user_reserve_kbytes
    (True, 64000, 194560 - 2000),             # root still pays its own user reserve
])
def test_mode_2_grants_strictly_below_the_limit_less_reserves(admin, total_vm, allowed):
    m = machine(RESERVES, 'swap = "256MiB"')
    mm = None
    if total_vm is not None:
        mm = MM(len(m.zones))
        mm.total_vm = total_vm
    m.vm_committed_as = 1000
    # Committed_AS after charging must stay below `allowed`: equal is refused
    assert __vm_enough_memory(m, mm, allowed - 1000, admin) == -ENOMEM
    assert m.vm_committed_as == 1000
    assert __vm_enough_memory(m, mm, allowed - 1001, admin) == 0
    assert m.vm_committed_as == allowed - 1
    assert __vm_enough_memory(m, mm, 1, admin) == -ENOMEM
    assert m.vm_committed_as == allowed - 1


def test_mode_2_takes_the_mm_of_a_task():
    m = machine(RESERVES, 'swap = "256MiB"')
    mm = MM(len(m.zones))
    mm.total_vm = 64000
    task = Task(100, 100, "t", 1000, frozenset(), Signal(0), mm)
    assert __vm_enough_memory(m, task, 194560 - 2048 - 2000, False) == -ENOMEM
    assert __vm_enough_memory(m, task, 194560 - 2048 - 2001, False) == 0


@pytest.mark.parametrize("memory, admin_kb, user_kb", [
    # free at boot = managed - slab (auto: memory/128 + memory/256); reserves = free_kB / 32
    ("64MiB", 1992, 1992),       # (16128 - 128 - 64) pages = 63744 kB -> 1992 kB, under both caps
    ("1GiB", 8192, 31872),       # (258048 - 2048 - 1024) pages -> 31872 kB: admin capped at 8 MiB
    ("8GiB", 8192, 131072),      # (2064384 - 16384 - 8192) pages -> 254976 kB: both capped
])
def test_auto_reserves_are_3_percent_of_free_memory_capped(memory, admin_kb, user_kb):
    m = sim.build(parse_config(f'[machine]\nmemory = "{memory}"\n'))
    assert (m.admin_reserve_kbytes, m.user_reserve_kbytes) == (admin_kb, user_kb)


# --- Linux 2.4's vm_enough_memory() ------------------------------------------------------


def test_vm_enough_memory_24_sums_cache_free_swap_and_slab():
    m = machine("", 'swap = "128MiB"\npage_cache = "64MiB"\ndirty = "16MiB"\n'
                    'slab_reclaimable = "8MiB"\nslab_unreclaimable = "4MiB"')
    free_pages = TOTALRAM - 16384 - 4096 - 2048 - 1024    # what boot left on the free lists
    total = (16384 + 4096 + 0)    # page cache: clean + dirty + writeback
    total += free_pages           # free pages
    total += 32768                # free swap
    total += 0                    # swap cache: none in the model
    total += 2048                 # dentry + inode caches: the reclaimable slab
    assert total == 289792
    assert vm_enough_memory_24_free(m) == total
    assert vm_enough_memory_24(m, total - 1) == 1
    assert vm_enough_memory_24(m, total) == 0
    assert m.vm_committed_as == 0  # 2.4 keeps no counter


@pytest.mark.parametrize("mode", [1, 2])
def test_vm_enough_memory_24_any_nonzero_mode_means_always(mode):
    m = machine(f"overcommit_memory = {mode}")
    assert vm_enough_memory_24(m, 10**9) == 1


# --- config ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, where_, problem", [
    ("[kernel]\novercommit_memory = 3", "kernel.overcommit_memory", "must be at most 2"),
    ("[kernel]\novercommit_ratio = -1", "kernel.overcommit_ratio", "must be at least 0"),
    ("[kernel]\nadmin_reserve_kbytes = \"lots\"", "kernel.admin_reserve_kbytes", "expected an integer"),
    ("[kernel]\nuser_reserve_kbytes = -5", "kernel.user_reserve_kbytes", "expected an integer"),
    ("[kernel]\novercommit_heuristic = \"2.6\"", "kernel.overcommit_heuristic", "expected 'modern' or '2.4'"),
    ('[[tasks]]\nname = "a"\nprogram = [{op = "fork", on_fail = "panic"}]', "tasks[0].program[0].on_fail",
     "expected"),
])
def test_bad_overcommit_keys_name_the_key(text, where_, problem):
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "x.toml")
    assert str(exc.value).startswith(f"x.toml: {where_}: {problem}")


def test_overcommit_defaults():
    k = parse_config("").kernel
    assert (k.overcommit_memory, k.overcommit_ratio, k.overcommit_kbytes, k.admin_reserve_kbytes,
            k.user_reserve_kbytes, k.overcommit_heuristic) == (0, 50, 0, "auto", "auto", "modern")


# --- overcommit-0: one impossible request refused, many possible ones overcommit ----------


@pytest.fixture(scope="module")
def mode0(simulate):
    return simulate("configs/overcommit-0.toml")


def test_mode0_refuses_the_single_huge_mapping_without_an_oom(mode0):
    huge = only(pids_of(mode0, "huge"))
    [check] = checks(mode0, huge)
    assert (check["pages"], check["mode"], check["allowed"], check["result"]) == (524288, 0, TOTALRAM, -ENOMEM)
    [failed] = where(events(mode0, "sim:step_failed"), pid=huge)
    assert (failed["op"], failed["errno"]) == ("alloc", ENOMEM)
    # the program saw the error and exited on its own; nobody was killed for it
    [exit_] = where(events(mode0, "sched:sched_process_exit"), pid=huge)
    assert exit_["reason"] == "exit" and exit_["i"] > failed["i"]
    assert huge not in [k["pid"] for k in events(mode0, "sim:oom_kill")]
    assert not [e for e in events(mode0, "sim:out_of_memory_enter", "sim:slowpath_enter") if e["i"] < exit_["i"]]


def test_mode0_grants_requests_that_together_exceed_ram_and_then_ooms(mode0):
    nibblers = set(pids_of(mode0, "nibbler"))
    granted = [c for c in checks(mode0) if c["pid"] in nibblers]
    assert len(granted) == 3 and all(c["result"] == 0 and c["pages"] == 102400 for c in granted)
    # Committed_AS ends up at 3 * 400MiB = 307200 pages, more than the 258048 of RAM
    assert max(c["committed"] for c in granted) == 307200 > TOTALRAM
    kills = events(mode0, "sim:oom_kill")
    assert kills and {k["pid"] for k in kills} <= nibblers
    assert all(c["i"] < kills[0]["i"] for c in granted)
    assert not [f for f in events(mode0, "sim:step_failed") if f["pid"] in nibblers]


def test_mode0_summary_reports_committed_as(mode0):
    s = summarize(mode0.records, seed=mode0.seed, hz=mode0.hz)
    # everyone exited: every charge was given back
    assert (s["committed_as"], s["committed_as_peak"], s["overcommit_refusals"]) == (0, 307200, 1)


# --- overcommit-1: everything is granted, the fault path does the killing ---------------


@pytest.fixture(scope="module")
def mode1(simulate):
    return simulate("configs/overcommit-1.toml")


def test_mode1_grants_the_huge_mapping_and_the_oom_killer_takes_it(mode1):
    huge = only(pids_of(mode1, "huge"))
    [check] = checks(mode1, huge)
    # Committed_AS = idle's 16MiB (4096 pages) + 2GiB (524288), twice RAM, and still granted
    assert (check["pages"], check["mode"], check["committed"], check["allowed"], check["result"]) == \
        (524288, 1, 4096 + 524288, -1, 0)
    assert not events(mode1, "sim:step_failed")
    kills = events(mode1, "sim:oom_kill")
    assert [k["pid"] for k in kills] == [huge]
    assert kills[0]["i"] > check["i"]
    [exit_] = where(events(mode1, "sched:sched_process_exit"), pid=huge)
    assert exit_["reason"] == "killed"
    # its exit gave the charge back: only idle's boot memory stays committed
    last = events(mode1, "sim:commit")[-1]
    assert last["committed_as"] == 4096 and last["i"] > exit_["i"]


# --- overcommit-2: strict accounting, exact boundary, no OOM ever ------------------------


@pytest.fixture(scope="module")
def mode2(simulate):
    return simulate("configs/overcommit-2.toml")


# CommitLimit = 258048 * 50 / 100 = 129024 (no swap); non-root: - 2048 (admin reserve)
ALLOWED_NONROOT = 129024 - 2048


def test_mode2_refuses_the_fork_of_a_big_process(mode2):
    big = only(pids_of(mode2, "bigproc"))
    [check] = checks(mode2, big)
    # dup_mmap charges bigproc's 76800 accounted pages again; Committed_AS was
    # 76800 (bigproc) + 1024 (small), the user reserve is bigproc's total_vm / 32 = 2400
    assert check["pages"] == 76800
    assert check["committed"] == 76800 + 1024 + 76800
    assert check["allowed"] == ALLOWED_NONROOT - 2400
    assert check["result"] == -ENOMEM
    [failed] = where(events(mode2, "sim:step_failed"), pid=big)
    assert (failed["op"], failed["errno"]) == ("fork", ENOMEM)
    assert not pids_of(mode2, "bigchild")
    assert not where(events(mode2, "sched:sched_process_fork"), pid=big)


def test_mode2_a_small_fork_is_charged_and_given_back_at_exit(mode2):
    small = only(pids_of(mode2, "small"))
    [check] = checks(mode2, small)
    assert (check["pages"], check["committed"], check["allowed"], check["result"]) == \
        (1024, 76800 + 1024 + 1024, ALLOWED_NONROOT - 1024 // 32, 0)
    assert only(pids_of(mode2, "smallchild"))


def test_mode2_refuses_exactly_at_the_commit_limit(mode2):
    grower = only(pids_of(mode2, "grower"))
    cs = checks(mode2, grower)
    assert len(cs) == 15
    # small and its child have exited: only bigproc's 76800 pages are committed.  The k-th
    # 16MiB mapping (k = 1..11) is judged with total_vm = 4096 (k-1):
    # Committed_AS = 76800 + 4096 k  <  allowed = 126976 - 4096 (k-1) / 32
    for k, c in enumerate(cs[:11], start=1):
        assert (c["pages"], c["committed"], c["allowed"], c["result"]) == \
            (4096, 76800 + 4096 * k, ALLOWED_NONROOT - 128 * (k - 1), 0)
    # total_vm = 45056 -> user reserve 1408 -> allowed 125568; committed 121856 so far
    at, below, one_more = cs[11:14]
    assert (at["pages"], at["committed"], at["allowed"], at["result"]) == (3712, 125568, 125568, -ENOMEM)
    assert (below["pages"], below["committed"], below["allowed"], below["result"]) == (3711, 125567, 125568, 0)
    # total_vm = 48767 -> reserve 1523 -> allowed 125453: one page more is refused
    assert (one_more["pages"], one_more["committed"], one_more["allowed"], one_more["result"]) == \
        (1, 125568, 125453, -ENOMEM)
    assert [f["op"] for f in where(events(mode2, "sim:step_failed"), pid=grower)] == ["alloc", "alloc"]
    # munmap gave back every accounted page: the next 16MiB is judged on bigproc's alone
    again = cs[14]
    assert (again["pages"], again["committed"], again["allowed"], again["result"]) == \
        (4096, 76800 + 4096, ALLOWED_NONROOT, 0)


def test_mode2_never_ooms_and_gives_everything_back(mode2):
    assert not events(mode2, "sim:out_of_memory_enter")
    assert not events(mode2, "sim:oom_kill")
    assert {e["reason"] for e in events(mode2, "sched:sched_process_exit")} == {"exit"}
    s = summarize(mode2.records, seed=mode2.seed, hz=mode2.hz)
    assert (s["committed_as"], s["committed_as_peak"], s["overcommit_refusals"]) == (0, 125567, 3)
    assert {c["commit_limit"] for c in events(mode2, "sim:commit")} == {129024}


# --- on_fail = "retry": the charge of an exiting process makes room ----------------------

RETRY = """
[machine]
memory = "1GiB"
[kernel]
overcommit_memory = 2
admin_reserve_kbytes = 0
user_reserve_kbytes = 0
[run]
duration = "5s"
[[tasks]]
name = "holder"
rss = "400MiB"
program = [{ op = "sleep", time = "1s" }]
[[tasks]]
name = "waiter"
program = [{ op = "alloc", size = "200MiB", on_fail = "retry" }]
"""


def test_mode2_retry_succeeds_once_another_process_exits(simulate):
    r = simulate(parse_config(RETRY))
    holder, waiter = only(pids_of(r, "holder")), only(pids_of(r, "waiter"))
    [holder_exit] = where(events(r, "sched:sched_process_exit"), pid=holder)
    cs = checks(r, waiter)
    # 102400 + 51200 = 153600 >= CommitLimit 129024 while holder lives
    refused, granted = cs[:-1], cs[-1]
    assert len(refused) > 10
    assert all(c["result"] == -ENOMEM and c["committed"] == 153600 and c["i"] < holder_exit["i"] for c in refused)
    assert (granted["result"], granted["committed"], granted["allowed"]) == (0, 51200, 129024)
    assert granted["i"] > holder_exit["i"]
    # the program paused between attempts (10 ms = 3 jiffies at HZ=250)
    assert {b["t"] - a["t"] for a, b in zip(cs, cs[1:-1])} == {3}
    assert len(where(events(r, "sim:step_failed"), pid=waiter)) == len(refused)
    assert not events(r, "sim:oom_kill")


# --- kernel.overcommit_heuristic = "2.4" --------------------------------------------------

HEUR24 = """
[machine]
memory = "1GiB"
page_cache = "32MiB"
[kernel]
overcommit_heuristic = "2.4"
[run]
duration = "3s"
[[tasks]]
name = "hog"
rss = "600MiB"
program = [{ op = "sleep", time = "1s" }]
[[tasks]]
name = "asker"
program = [
  { op = "alloc", size = "500MiB", on_fail = "continue" },
  { op = "alloc", size = "200MiB" },
  { op = "fork", comm = "kid", program = [{ op = "sleep", time = "10ms" }] },
]
"""


def test_heuristic_24_judges_a_request_against_free_looking_memory(simulate):
    r = simulate(parse_config(HEUR24))
    asker = only(pids_of(r, "asker"))
    first, second = checks(r, asker)
    # free + page cache + free swap + reclaimable slab at t=0: RAM less hog's 153600 pages
    # and their 300 page-table pages, less the unreclaimable slab (1024) -- mode 0 of 5.2+
    # would have granted 128000 pages (< RAM), 2.4 does not
    assert (first["pages"], first["allowed"], first["result"], first["heuristic"]) == \
        (128000, TOTALRAM - 153600 - 300 - 1024, -ENOMEM, "2.4")
    assert (second["pages"], second["result"]) == (51200, 0)
    # 2.4's fork did not consult vm_enough_memory(): no third check, and the child exists
    assert len(checks(r, asker)) == 2
    assert only(pids_of(r, "kid"))
    assert not events(r, "sim:oom_kill")
