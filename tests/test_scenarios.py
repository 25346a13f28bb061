"""The scenario configs in configs/: each run's outcome, read from its events.

Every run goes through the ``simulate`` fixture, so page conservation and oom_lock
mutual exclusion are checked after every event as well.
"""

from __future__ import annotations

import pytest

from helpers import check_one_victim_at_a_time, events, pids_of, where


def only(pids: list[int]) -> int:
    assert len(pids) == 1, pids
    return pids[0]


def hz_of(result) -> int:
    return events(result, "sim:run_start")[0]["hz"]


# --- quickstart: the leaker is killed and memory comes back ----------------------------


@pytest.fixture(scope="module")
def quickstart(simulate):
    return simulate("configs/quickstart.toml")


def test_quickstart_kills_the_leaker_and_only_it(quickstart):
    leaker = only(pids_of(quickstart, "leaker"))
    kills = events(quickstart, "sim:oom_kill")
    assert [(k["pid"], k["comm"], k["message"]) for k in kills] == [(leaker, "leaker", "Out of memory")]
    assert [v["pid"] for v in events(quickstart, "oom:mark_victim")] == [leaker]
    # the leaker dies of the kill; nobody else exits
    exits = events(quickstart, "sched:sched_process_exit")
    assert [(e["pid"], e["reason"]) for e in exits] == [(leaker, "killed")]
    assert exits[0]["i"] > kills[0]["i"]


def test_quickstart_memory_recovers_after_the_kill(quickstart):
    kill = events(quickstart, "sim:oom_kill")[0]
    leaker_pages = kill["anon_rss"] // 4  # kB -> pages
    exit_ = events(quickstart, "sched:sched_process_exit")[0]
    samples = events(quickstart, "sim:meminfo")
    before = [s for s in samples if s["i"] < kill["i"]][-1]
    after = [s for s in samples if s["i"] > exit_["i"]][0]
    # just before the kill memory was nearly gone; afterwards most of the leaker's pages are free
    assert before["free"] < leaker_pages // 20
    assert after["free"] - before["free"] > leaker_pages // 2


# --- parallel-oom: many allocators, one oom_lock, one victim at a time ----------------


@pytest.fixture(scope="module")
def parallel(simulate):
    return simulate("configs/parallel-oom.toml")


def test_parallel_oom_has_many_simultaneous_allocators(parallel):
    assert events(parallel, "sim:run_start")[0]["cpus"] == 8
    hogs = set(pids_of(parallel, "hog"))
    assert len(hogs) >= 8
    first_alloc = {}
    for s in where(events(parallel, "sim:step"), op="alloc"):
        first_alloc.setdefault(s["pid"], s["t"])
    starting_now = [p for p in hogs if first_alloc.get(p) == 0]
    assert len(starting_now) >= 8


def test_parallel_oom_contends_for_oom_lock(parallel):
    hogs = set(pids_of(parallel, "hog"))
    contended = events(parallel, "sim:oom_lock_contended")
    assert contended and {c["pid"] for c in contended} <= hogs
    # a loser found the lock taken while someone else was inside out_of_memory()
    enters = events(parallel, "sim:out_of_memory_enter")
    returns = events(parallel, "sim:out_of_memory_return")
    assert any(e["i"] < c["i"] < r["i"] for c in contended for e, r in zip(enters, returns))


def test_parallel_oom_kills_one_victim_at_a_time(parallel):
    victims = events(parallel, "oom:mark_victim")
    assert len(victims) >= 2  # the rule was exercised more than once
    # OOM invocations that found a victim still on its way out aborted instead of killing
    assert where(events(parallel, "sim:out_of_memory_return"), reason="victim_pending")
    check_one_victim_at_a_time(parallel)


def test_one_victim_checker_catches_a_second_victim_marked_too_early():
    # two victims, the first neither exited nor got MMF_OOM_SKIP before the second
    from oomactors.events import event_id
    mark, skip = event_id("oom:mark_victim"), event_id("sim:mmf_oom_skip")
    fields = ("hog", 0, 0, 0, 0, 1000, 0, 0)
    ok = [(1, mark, 0, 10, *fields), (2, skip, 0, 10, "oom_reaper"), (3, mark, 0, 11, *fields)]
    check_one_victim_at_a_time(ok)
    with pytest.raises(AssertionError, match="pid 11 marked"):
        check_one_victim_at_a_time([ok[0], ok[2]])


# --- stuck-victim: the reaper cannot take mmap_lock, gives up, the next OOM moves on ----


@pytest.fixture(scope="module")
def stuck(simulate):
    return simulate("configs/stuck-victim.toml")


def test_stuck_victim_is_chosen_while_blocked_holding_mmap_lock(stuck):
    bigdb = only(pids_of(stuck, "bigdb"))
    first = events(stuck, "oom:mark_victim")[0]
    assert first["pid"] == bigdb
    held = where(events(stuck, "sim:mmap_lock"), pid=bigdb, op="hold_write")
    assert held and held[0]["i"] < first["i"]
    # SIGKILL cannot end a TASK_UNINTERRUPTIBLE sleep: bigdb never exits during the run,
    # and holds its mmap_lock to the end (the run's teardown releases nothing)
    assert not where(events(stuck, "sched:sched_process_exit"), pid=bigdb)
    assert not where(events(stuck, "sim:mmap_lock"), pid=bigdb, op="release_write")


def test_stuck_victim_reaper_retries_ten_times_then_gives_up(stuck):
    bigdb = only(pids_of(stuck, "bigdb"))
    hz = hz_of(stuck)
    mark = events(stuck, "oom:mark_victim")[0]
    skips = where(events(stuck, "oom:skip_task_reaping"), pid=bigdb)
    assert len(skips) == 10  # MAX_OOM_REAP_RETRIES mmap_read_trylock failures
    assert skips[0]["i"] > mark["i"]
    assert [b["t"] - a["t"] for a, b in zip(skips, skips[1:])] == [hz // 10] * 9
    assert not where(events(stuck, "oom:start_task_reaping"), pid=bigdb)
    unable = where(events(stuck, "sim:reaper_unable"), pid=bigdb)
    assert len(unable) == 1 and unable[0]["comm"] == "bigdb"
    assert unable[0]["t"] == skips[-1]["t"] + hz // 10 and unable[0]["i"] > skips[-1]["i"]
    skip_flag = where(events(stuck, "sim:mmf_oom_skip"), pid=bigdb)
    assert [(s["by"]) for s in skip_flag] == ["oom_reaper"]
    assert skip_flag[0]["i"] > unable[0]["i"]


def test_stuck_victim_next_victim_only_after_mmf_oom_skip(stuck):
    bigdb = only(pids_of(stuck, "bigdb"))
    grower = only(pids_of(stuck, "grower"))
    skip_flag = where(events(stuck, "sim:mmf_oom_skip"), pid=bigdb)[0]
    victims = events(stuck, "oom:mark_victim")
    assert [v["pid"] for v in victims] == [bigdb, grower]
    assert victims[1]["i"] > skip_flag["i"]
    # meanwhile the grower's OOM invocations aborted on the pending victim
    pending = where(events(stuck, "sim:out_of_memory_return"), reason="victim_pending")
    assert pending and all(victims[0]["i"] < p["i"] < skip_flag["i"] for p in pending)
    assert [k["pid"] for k in events(stuck, "sim:oom_kill")] == [bigdb, grower]
    check_one_victim_at_a_time(stuck)


# --- unkillable-panic: nothing may be killed, so the kernel panics ---------------------


@pytest.fixture(scope="module")
def unkillable(simulate):
    return simulate("configs/unkillable-panic.toml")


def test_unkillable_panic_ends_the_run(unkillable):
    users = [t for t in events(unkillable, "sim:task_new") if not t["kthread"] and t["pid"] != 1]
    assert users and all(t["oom_score_adj"] == -1000 for t in users)
    assert unkillable.reason == "panic"
    assert len(events(unkillable, "sim:no_killable")) == 1
    panics = events(unkillable, "sim:panic")
    assert [p["message"] for p in panics] == ["System is deadlocked on memory"]
    assert not events(unkillable, "sim:oom_kill") and not events(unkillable, "oom:mark_victim")
    # panic() halts the machine: nothing happens after it but the end of the run
    tail = events(unkillable)[-2:]
    assert [e["event"] for e in tail] == ["sim:panic", "sim:run_end"]
    assert tail[1]["reason"] == "panic"


# --- nofs-loop: GFP_NOFS never kills -------------------------------------------------


@pytest.fixture(scope="module")
def nofs(simulate):
    return simulate("configs/nofs-loop.toml")


def test_nofs_reaches_out_of_memory_but_never_kills(nofs):
    enters = events(nofs, "sim:out_of_memory_enter")
    returns = events(nofs, "sim:out_of_memory_return")
    assert enters and len(returns) == len(enters)
    assert all("GFP_NOFS" in e["gfp_flags"] for e in enters)
    assert {(r["result"], r["reason"]) for r in returns} == {(1, "no_fs")}
    assert not events(nofs, "sim:oom_kill")
    assert not events(nofs, "oom:mark_victim")
    assert not events(nofs, "sched:sched_process_exit")


# --- costly-order: order-4 failures do not invoke the OOM killer ---------------------


@pytest.fixture(scope="module")
def costly(simulate):
    return simulate("configs/costly-order.toml")


def test_costly_order_fails_without_oom(costly):
    dmabuf = only(pids_of(costly, "dmabuf"))
    fails = where(events(costly, "sim:slowpath_exit"), order=4, result="fail")
    assert fails and all(f["pid"] == dmabuf for f in fails)
    reports = where(events(costly, "sim:page_alloc_failure"), order=4)
    assert reports and reports[0]["comm"] == "dmabuf" and "GFP_KERNEL" in reports[0]["gfp_flags"]
    assert not where(events(costly, "sim:out_of_memory_enter"), order=4)
    assert not events(costly, "sim:oom_lock_acquired")  # never reached __alloc_pages_may_oom
    assert not events(costly, "sim:oom_kill")
    # the caller got NULL (ENOMEM) and carried on
    assert where(events(costly, "sim:step_failed"), pid=dmabuf, errno=12)
    assert not events(costly, "sched:sched_process_exit")


FRAGMENTED = """
[machine]
cpus = 2
memory = "512MiB"
page_cache = "64MiB"
fragmentation = 0.98
[run]
duration = "1s"
stop_when_idle = false
[[tasks]]
name = "dmabuf"
program = [{ op = "repeat", steps = [
  { op = "alloc", size = "1MiB", kind = "kernel", order = 4, gfp = "GFP_KERNEL", on_fail = "continue" },
  { op = "sleep", time = "50ms" } ] }]
"""


def test_high_order_blocks_are_requested_one_at_a_time(simulate):
    # compaction works for one block of the order; a request that got "success" from it
    # (and has no competitor) must get its block
    from oomactors.config import parse_config
    r = simulate(parse_config(FRAGMENTED))
    compacted = False
    exits = []
    for ev in events(r, "sim:slowpath_enter", "compaction:mm_compaction_end", "sim:slowpath_exit"):
        if ev["event"] == "sim:slowpath_enter":
            compacted = False
        elif ev["event"] == "compaction:mm_compaction_end":
            compacted |= ev["result"] == "success"
        elif compacted:
            exits.append(ev["result"])
    assert exits and set(exits) == {"ok"}


# --- allocating-task: oom_kill_allocating_task kills current -------------------------


@pytest.fixture(scope="module")
def allocating(simulate):
    return simulate("configs/allocating-task.toml")


def test_allocating_task_is_killed_not_the_largest(allocating):
    worker = only(pids_of(allocating, "worker"))
    bigcache = only(pids_of(allocating, "bigcache"))
    kills = events(allocating, "sim:oom_kill")
    assert len(kills) == 1
    kill = kills[0]
    assert (kill["pid"], kill["cur_pid"]) == (worker, worker)
    assert kill["message"] == "Out of memory (oom_kill_allocating_task)"
    # the worker was the smaller one: the task table of the report says so
    header = events(allocating, "sim:oom_header")[0]
    rss = {row[0]: row[4] for row in header["rows"]}
    assert rss[worker] < rss[bigcache]
    exits = events(allocating, "sched:sched_process_exit")
    assert [(e["pid"], e["reason"]) for e in exits] == [(worker, "killed")]
