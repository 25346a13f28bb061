"""Issue 12's rules that change who dies or when, each checked on a real run against what
Linux does (fs/proc/base.c, kernel/fork.c, mm/vmscan.c, mm/oom_kill.c of 5.10 and 2.4).

Every run goes through the ``simulate`` fixture, so page conservation and oom_lock mutual
exclusion are checked after every event as well.
"""

from __future__ import annotations

import copy

import pytest

from helpers import drive, events, pids_of, where

from oomactors.config import Config

EACCES = 13


def config(tasks: dict, *, machine: dict | None = None, kernel: dict | None = None,
           run: dict | None = None, duration: str = "20s", **extra) -> Config:
    data = {
        "machine": {"cpus": 2, "memory": "1GiB", "swap": "0", "page_cache": "64MiB", "dirty": "0",
                    **(machine or {})},
        "kernel": {"profile": "linux-5.10", **(kernel or {})},
        "run": {"duration": duration, "seed": 0, "stop_when_idle": True, **(run or {})},
        "tasks": [{"name": name, **spec} for name, spec in tasks.items()],
        **extra,
    }
    return Config.model_validate(data)


def kills(result) -> list[dict]:
    return events(result, "sim:oom_kill")


# --- rule 1: oom_score_adj writes (fs/proc/base.c __set_oom_adj) ------------------------

IDLE = [{"op": "repeat", "steps": [{"op": "sleep", "time": "100ms"}]}]
GROW = [{"op": "repeat", "steps": [{"op": "alloc", "size": "16MiB", "rate": "256MiB/s"}]}]


def adj_tasks(caps: tuple = ()) -> dict:
    return {
        "db": {"uid": 999, "rss": "400MiB", "program": IDLE},
        "sneaky": {"uid": 1000, "caps": list(caps), "start": "500ms", "program": [
            {"op": "set_oom_score_adj", "value": -1000}, *GROW]},
    }


def test_unprivileged_task_cannot_make_itself_unkillable(simulate):
    r = simulate(config(adj_tasks()))
    sneaky = pids_of(r, "sneaky")[0]
    # the write fails with EACCES and changes nothing
    assert [(f["op"], f["errno"]) for f in where(events(r, "sim:step_failed"), pid=sneaky)] == [
        ("set_oom_score_adj", EACCES)]
    assert not where(events(r, "oom:oom_score_adj_update"), pid=sneaky)
    # so the grower, not the innocent database, is the OOM victim
    assert [(k["comm"], k["oom_score_adj"]) for k in kills(r)] == [("sneaky", 0)]


def test_cap_sys_resource_may_go_to_minus_1000(simulate):
    r = simulate(config(adj_tasks(("CAP_SYS_RESOURCE",))))
    sneaky = pids_of(r, "sneaky")[0]
    assert not where(events(r, "sim:step_failed"), pid=sneaky)
    assert [u["oom_score_adj"] for u in where(events(r, "oom:oom_score_adj_update"), pid=sneaky)] == [-1000]
    # unkillable: the database dies first
    assert kills(r)[0]["comm"] == "db"
    assert "sneaky" not in {k["comm"] for k in kills(r)}


def test_adj_floor_is_oom_score_adj_min_and_is_inherited(simulate):
    # a launcher with CAP_SYS_RESOURCE gave the service -500 (its floor); the unprivileged
    # service may go up and back down to -500, not below it, and so may its forked child
    prog = [{"op": "set_oom_score_adj", "value": 200}, {"op": "set_oom_score_adj", "value": -500},
            {"op": "set_oom_score_adj", "value": -501}]
    r = simulate(config({"svc": {"uid": 1000, "oom_score_adj": -500, "program": [
        *prog, {"op": "fork", "comm": "child", "program": prog}, {"op": "sleep", "time": "1s"}]}},
        duration="2s"))
    for comm in ("svc", "child"):
        pid = pids_of(r, comm)[0]
        assert [u["oom_score_adj"] for u in where(events(r, "oom:oom_score_adj_update"), pid=pid)] == [200, -500]
        assert [(f["op"], f["errno"]) for f in where(events(r, "sim:step_failed"), pid=pid)] == [
            ("set_oom_score_adj", EACCES)]
    # the child starts with its parent's adj at fork time
    child = [t for t in events(r, "sim:task_new") if t["comm"] == "child"][0]
    assert child["oom_score_adj"] == -500


def test_2636_floor_is_the_current_value(simulate):
    # before oom_score_adj_min (3.2), an unprivileged task could never lower its value
    r = simulate(config({"svc": {"uid": 1000, "program": [
        {"op": "set_oom_score_adj", "value": 300}, {"op": "set_oom_score_adj", "value": 100}]}},
        kernel={"profile": "linux-2.6.36"}, duration="1s"))
    pid = pids_of(r, "svc")[0]
    assert [u["oom_score_adj"] for u in where(events(r, "oom:oom_score_adj_update"), pid=pid)] == [300]
    assert [f["errno"] for f in where(events(r, "sim:step_failed"), pid=pid)] == [EACCES]


# --- rule 2: fork copies the mm's accounting (dup_mmap, copy_present_pte) -----------------

def fork_config(child_program: list, parent_after: list | None = None, **kw) -> Config:
    """small idles with 150 MiB; big maps 300 MiB, forks ``child``, then idles."""
    return config({
        "small": {"uid": 1000, "rss": "150MiB", "program": IDLE},
        "big": {"uid": 1000, "program": [
            {"op": "alloc", "size": "300MiB"},
            {"op": "fork", "comm": "child", "program": child_program},
            *(parent_after or IDLE)]},
    }, **kw)


def test_forked_child_counts_the_shared_pages_and_is_chosen_for_them(simulate):
    # big is protected (-1000, set by a privileged launcher); its child raises its own adj
    # to 0 and idles.  A grower launched at -500 pushes the machine into the OOM killer.
    r = simulate(config({
        "small": {"uid": 1000, "rss": "150MiB", "program": IDLE},
        "big": {"uid": 1000, "oom_score_adj": -1000, "program": [
            {"op": "alloc", "size": "300MiB"},
            {"op": "fork", "comm": "child", "program": [{"op": "set_oom_score_adj", "value": 0}, *IDLE]},
            *IDLE]},
        "grower": {"uid": 1000, "oom_score_adj": -500, "start": "2s", "program": GROW},
    }))
    header = events(r, "sim:oom_header")[0]
    rows = {row[8]: row for row in header["rows"]}
    big, child = rows["big"], rows["child"]
    # total_vm is copied with the VMAs; the 300 MiB of anon are counted in both rss
    assert child[3] == big[3] >= 300 * 256
    assert child[4] == big[4] >= 300 * 256
    # so the child, not the smaller innocent task, has the highest badness and is killed
    first = kills(r)[0]
    assert (first["comm"], first["anon_rss"]) == ("child", big[4] * 4)
    # killing it frees none of the shared pages: they are still big's
    assert where(events(r, "sim:exit_mm"), pid=first["pid"])[0]["pages"] == 0
    # so the OOM killer has to go on to the next task
    assert kills(r)[1]["comm"] == "small"


def test_a_write_gives_the_child_private_copies(simulate):
    r = simulate(fork_config([{"op": "sleep", "time": "1s"}, {"op": "write", "size": "100MiB"}, *IDLE],
                             duration="3s", run={"meminfo_interval": "100ms"}))
    samples = events(r, "sim:meminfo")
    fork_t = events(r, "sched:sched_process_fork")[0]["t"]
    write_t = where(events(r, "sim:step"), op="write")[0]["t"]
    before = [s for s in samples if fork_t < s["t"] < write_t][-1]
    after = samples[-1]
    # 100 MiB of new pages: the copies
    assert after["anon"] - before["anon"] == 100 * 256


def test_pages_the_child_still_maps_survive_the_parents_exit(simulate):
    r = simulate(fork_config([{"op": "sleep", "time": "2s"}], [{"op": "sleep", "time": "1s"}],
                             duration="3s", run={"meminfo_interval": "100ms"}))
    big = pids_of(r, "big")[0]
    # big's exit frees only its page tables: its anonymous pages are the child's now
    assert where(events(r, "sim:exit_mm"), pid=big)[0]["pages"] <= 300 * 256 // 512 + 1
    exit_t = where(events(r, "sched:sched_process_exit"), pid=big)[0]["t"]
    after = [s for s in events(r, "sim:meminfo") if s["t"] > exit_t][0]
    assert after["anon"] >= (150 + 300) * 256
    # and the child's exit then gives them back
    child = pids_of(r, "child")[0]
    assert where(events(r, "sim:exit_mm"), pid=child)[0]["pages"] >= 300 * 256


# --- rule 3: global reclaim respects memory.min and memory.low (shrink_node_memcgs) -----

def protection_run(simulate, **prot):
    return simulate(config({
        "cache": {"uid": 1000, "memcg": "/prot", "program": [
            {"op": "touch_file", "size": "150MiB", "mapped": False}, *IDLE]},
        "grower": {"uid": 1000, "start": "1s", "program": GROW},
    }, memcgs=[{"path": "/prot", **prot}], run={"meminfo_interval": "100ms"}))


def prot_usage_at(r, t: int) -> int:
    """/prot's memory usage (pages) at the last sample at or before t."""
    return [u for u in events(r, "sim:memcg_usage") if u["path"] == "/prot" and u["t"] <= t][-1]["usage"]


def test_memory_min_keeps_the_cache_through_global_reclaim_until_the_oom(simulate):
    r = protection_run(simulate, min="200MiB")
    kill = kills(r)[0]
    assert kill["comm"] == "grower"
    # not one page of /prot's 150 MiB went, though the grower reclaimed everything else
    assert prot_usage_at(r, kill["t"]) == 150 * 256
    before = [s for s in events(r, "sim:meminfo") if s["t"] < kill["t"]][-1]
    assert before["file"] - 150 * 256 < 32 * 256  # most of the 64 MiB unprotected cache is gone
    assert not events(r, "sim:memcg_event")


def test_memory_low_is_breached_only_when_nothing_else_is_left(simulate):
    r = protection_run(simulate, low="200MiB")
    grower = pids_of(r, "grower")[0]
    lows = where(events(r, "sim:memcg_event"), name="low", path="/prot")
    assert lows
    # MEMCG_LOW is counted by direct reclaim's memcg_low_reclaim retry; kswapd never breaches
    assert {e["pid"] for e in lows} == {grower}
    first_low = lows[0]["t"]
    # until then /prot kept all its cache, while the unprotected cache went first
    assert prot_usage_at(r, first_low - 1) == 150 * 256
    before = [s for s in events(r, "sim:meminfo") if s["t"] < first_low][-1]
    assert before["file"] - 150 * 256 < 32 * 256
    # then it gave its cache rather than the machine going OOM
    kill = kills(r)[0]
    assert kill["t"] > first_low and prot_usage_at(r, kill["t"]) < 150 * 256 // 10


# --- rule 5: throttle_direct_reclaim (pfmemalloc_wait) ------------------------------------

def throttle_config() -> Config:
    # four user allocators in direct reclaim while a "network" consumer eats the atomic
    # reserves (GFP_ATOMIC may go below min); only kswapd can write the dirty page cache back
    return config({
        "grower": {"uid": 1000, "count": 4, "start": "500ms", "program": [
            {"op": "repeat", "steps": [{"op": "alloc", "size": "4MiB", "rate": "64MiB/s"}]}]},
        "netrx": {"uid": 0, "start": "500ms", "program": [{"op": "repeat", "steps": [
            {"op": "alloc", "kind": "kernel", "gfp": "GFP_ATOMIC", "size": "1MiB", "chunk": 32,
             "on_fail": "continue"},
            {"op": "sleep", "time": "4ms"}]}]},
    }, machine={"dirty": "500MiB", "page_cache": "0"}, duration="6s")


def test_direct_reclaimers_wait_for_kswapd_below_half_the_min_watermarks(simulate):
    r = simulate(throttle_config())
    growers = set(pids_of(r, "grower"))
    throttled = where(events(r, "sim:throttle"), why="pfmemalloc")
    assert throttled and {e["pid"] for e in throttled} <= growers
    # one count per throttling; a task still waiting when the run ends has no event yet
    assert 0 <= r.machine.vmstat["pgscan_direct_throttle"] - len(throttled) <= len(growers)
    # kthreads and the atomic consumer (it never reclaims) are never throttled
    assert not where(throttled, pid=pids_of(r, "netrx")[0])
    # while anyone waits, kswapd stays awake: it wakes the waiters before it sleeps
    sleeps = [e["t"] for e in events(r, "vmscan:mm_vmscan_kswapd_sleep")]
    waits = [(e["pid"], e["t"] - e["jiffies"], e["t"]) for e in throttled if e["jiffies"]]
    assert waits
    assert not [(s, w) for s in sleeps for w in waits if w[1] <= s < w[2]]
    # a throttled task does not reclaim (nor go OOM) until it is let go
    busy = events(r, "vmscan:mm_vmscan_direct_reclaim_begin", "sim:out_of_memory_enter")
    assert not [(e, w) for e in busy for w in waits if e["pid"] == w[0] and w[1] < e["t"] < w[2]]


def _unit_machine():
    from oomactors import sim
    from oomactors.actors.user import new_process
    m = sim.build(config({"a": {"uid": 1000, "program": IDLE}}, machine={"dirty": "100MiB"}))
    m.records = []  # the events, for the asserts (nothing keeps them otherwise)
    m.sinks.append(m.records.append)
    return m, new_process(m, "kswapd0", 0, frozenset(), 0, kthread=True)


def test_a_node_found_balanced_is_no_kswapd_failure():
    from oomactors.kernel.mmzone import ZONE_NORMAL
    from oomactors.kernel.vmscan_kswapd import balance_pgdat
    m, kswapd = _unit_machine()
    node = m.zones[0].node
    # balance_pgdat's "goto out": nothing reclaimed, and nothing needed to be
    drive(balance_pgdat(m, kswapd, node, 0, ZONE_NORMAL))
    assert node.kswapd_failures == 0
    assert not events(m.records, "sim:kswapd_failures")


def test_allow_direct_reclaim_is_half_the_min_watermarks_of_reclaimable_lowmem_zones():
    from oomactors.kernel.vmscan_throttle import allow_direct_reclaim
    m, _ = _unit_machine()
    node = m.zones[0].node
    # only zones with something to reclaim (here: the dirty cache) count
    zones = [z for z in node.zones if z.managed and z.zone_reclaimable_pages(m.swap_free)]
    others = [z for z in node.zones if z.managed and z not in zones]
    assert zones and others
    reserve = sum(z.min_wmark for z in zones)
    woken = []
    node.kswapd_sleeping = True
    node.kswapd_waiter = type("W", (), {"wake": lambda self, v: woken.append(v)})()
    saved = [z.nr_free for z in zones + others]
    for z in zones:
        z.nr_free = z.min_wmark // 2
    for z in others:
        z.nr_free = 0
    free = sum(z.nr_free for z in zones)
    assert free <= reserve // 2
    assert not allow_direct_reclaim(m, node)
    # kswapd is woken for lowmem, and the test is the strict "free > reserve / 2"
    assert woken == ["wake"] and node.kswapd_highest_zoneidx <= 2
    zones[-1].nr_free += reserve // 2 - free + 1
    assert allow_direct_reclaim(m, node)
    # a hopeless node throttles nobody
    zones[-1].nr_free -= reserve // 2 - free + 1
    node.kswapd_failures = 16
    assert allow_direct_reclaim(m, node)
    for z, f in zip(zones + others, saved):
        z.nr_free = f


# --- rule 4: shmem is swap-backed (on the anon LRU) ------------------------------------------

def test_shmem_is_reclaimable_and_swapped_out_when_swap_is_free(simulate):
    r = simulate(config({
        "tmpfs": {"uid": 1000, "program": [{"op": "alloc", "kind": "shmem", "size": "400MiB"}, *IDLE]},
        "grower": {"uid": 1000, "start": "1s", "program": GROW},
    }, machine={"swap": "1GiB", "dma": "0"}, run={"meminfo_interval": "100ms"}))  # tuned without ZONE_DMA
    samples = events(r, "sim:meminfo")
    kill = kills(r)[0]
    assert kill["comm"] == "grower"
    at_start = [s for s in samples if s["t"] < 250][-1]
    before_kill = [s for s in samples if s["t"] < kill["t"]][-1]
    assert at_start["shmem"] == 400 * 256
    # reclaim swapped most of the tmpfs pages out (alongside the grower's anon): they left
    # Shmem and the tmpfs task's rss, and took swap
    out = at_start["shmem"] - before_kill["shmem"]
    assert out > 400 * 256 // 2
    assert at_start["swap_free"] - before_kill["swap_free"] > out
    rows = {row[8]: row for row in events(r, "sim:oom_header")[0]["rows"]}
    assert rows["tmpfs"][4] <= before_kill["shmem"] + 256  # rss: what is left, and a little anon
    assert rows["tmpfs"][6] == 0  # swapped shmem leaves no swap pte: no MM_SWAPENTS


def test_zone_reclaimable_pages_count_shmem_only_with_free_swap():
    from oomactors import sim
    from oomactors.actors.user import new_process
    m = sim.build(config({"a": {"uid": 1000, "program": IDLE}}, machine={"swap": "64MiB", "page_cache": "0"}))
    t = new_process(m, "t", 1000, frozenset(), 0)
    zone = m.zones[-1]
    zone.nr_free -= 100
    m.charge(zone, "shmem", t.mm, 100)
    assert zone.zone_reclaimable_pages(m.swap_free) - zone.zone_reclaimable_pages(0) == 100


# --- rule 7: 2.4's select_bad_process and oom_kill_task --------------------------------------

def _select(profile: str, init_vm: int, caps: tuple = ()):
    """The default policy's choice on a built machine whose init maps ``init_vm`` pages."""
    from oomactors import sim
    from oomactors.kernel import gfp as G
    from oomactors.kernel.oom_kill import OomControl, oom_context, select_bad_process_in
    from oomactors.kernel.profiles import PROFILES
    m = sim.build(config({"a": {"uid": 1000, "caps": list(caps), "rss": "100MiB", "program": IDLE}},
                         kernel={"profile": profile}))
    from oomactors.actors.user import new_process
    init = new_process(m, "init", 0, frozenset(), 0)
    user = new_process(m, "a", 1000, frozenset(caps), 0)
    assert init.pid == 1 and init.is_global_init
    init.mm.total_vm = init_vm
    user.mm.total_vm = 100 * 256
    oc = OomControl(m.zonelists[0], None, None, G.GFP_KERNEL, 0)
    oc.totalpages = sum(z.managed for z in m.zones)
    ctx, _ = oom_context(m, oc, user)
    return select_bad_process_in(ctx, PROFILES[profile])


def test_24_walks_every_task_but_pid_0_so_init_can_be_chosen():
    assert _select("linux-2.4", 1000 * 256).pid == 1
    assert _select("linux-2.4", 10 * 256).pid == 2
    # from 2.6 on, init is never a candidate
    assert _select("linux-5.10", 1000 * 256).pid == 2
    assert _select("linux-2.6.36", 1000 * 256).pid == 2


@pytest.mark.parametrize("caps, on_sigterm, sig", [
    (["CAP_SYS_RAWIO"], "exit", 15), (["CAP_SYS_RAWIO"], "ignore", 15), ([], "ignore", 9)])
def test_24_sends_sigterm_to_a_cap_sys_rawio_victim_and_it_still_dies(simulate, caps, on_sigterm, sig):
    # the biggest task idles; kernel allocations (no total_vm of their own) exhaust memory
    r = simulate(config({
        "xserver": {"uid": 1000, "caps": caps, "on_sigterm": on_sigterm, "rss": "600MiB", "program": IDLE},
        "driver": {"uid": 1000, "start": "1s", "program": [{"op": "repeat", "steps": [
            {"op": "alloc", "kind": "kernel", "gfp": "GFP_KERNEL", "size": "16MiB", "rate": "256MiB/s",
             "on_fail": "continue"}]}]},
    }, kernel={"profile": "linux-2.4"}, duration="6s"))
    x = pids_of(r, "xserver")[0]
    assert kills(r)[0]["pid"] == x
    # force_sig(SIGTERM) with hardware access, else SIGKILL; never both
    assert [e["sig"] for e in where(events(r, "signal:signal_generate"), pid=x)] == [sig]
    # force_sig un-ignores SIGTERM: its default action kills the process
    assert [e["reason"] for e in where(events(r, "sched:sched_process_exit"), pid=x)] == ["killed"]


# --- smaller 5.10 conformance --------------------------------------------------------------

def _costly(simulate, profile: str):
    import tomllib
    from pathlib import Path
    data = tomllib.loads((Path(__file__).parent.parent / "configs/costly-order.toml").read_text())
    data["kernel"]["profile"] = profile
    data["tasks"][0]["rss"] = "360MiB"
    return simulate(Config.model_validate(data))


def test_510_counts_a_compaction_stall_even_when_compaction_was_deferred(simulate):
    runs = {p: _costly(simulate, p) for p in ("linux-4.19", "linux-5.10")}
    stalls = {p: r.machine.vmstat["compact_stall"] for p, r in runs.items()}
    # a compaction run in some zone ends with mm_compaction_end (one per zone compacted)
    ran = {p: len(events(r, "compaction:mm_compaction_end")) for p, r in runs.items()}
    # 4.19 returns before COMPACTSTALL when every zone was skipped or deferred: each stall
    # had at least one run
    assert 0 < stalls["linux-4.19"] <= ran["linux-4.19"]
    # 5.10 counts every direct compaction, deferred ones too, then tries the freelist
    assert stalls["linux-5.10"] > ran["linux-5.10"]
    for r in runs.values():
        v = r.machine.vmstat
        assert v["compact_stall"] == v["compact_success"] + v["compact_fail"]


def test_the_reaper_unmaps_private_file_mappings_too(simulate):
    r = simulate(config({
        # memory.min keeps reclaim off its mapped file pages until the kill
        "victim": {"uid": 1000, "memcg": "/v", "program": [
            {"op": "touch_file", "size": "64MiB", "mapped": True}, {"op": "alloc", "size": "500MiB"},
            {"op": "block", "time": "5s", "hold_mmap_lock": False}]},
        "grower": {"uid": 1000, "start": "1s", "program": GROW},
    }, memcgs=[{"path": "/v", "min": "1GiB"}], duration="8s"))
    kill = kills(r)[0]
    assert kill["comm"] == "victim" and kill["file_rss"] >= 64 * 1024
    reaped = where(events(r, "sim:reaper_reaped"), pid=kill["pid"])
    # 5.10's reaper zaps every !VM_SHARED mapping: anon and file-rss both end at 0
    assert [(e["anon_rss"], e["file_rss"]) for e in reaped] == [(0, 0)]


def test_memcg_charges_fall_back_to_single_pages_and_a_dying_task_forces_one(simulate):
    r = simulate(config({
        "hog": {"uid": 1000, "memcg": "/c", "program": [{"op": "alloc", "size": "1024 pages"}, *IDLE]},
    }, memcgs=[{"path": "/c", "max": "1000 pages"}], duration="3s"))
    ooms = where(events(r, "sim:memcg_event"), name="oom", path="/c")
    # the 32-page chunks' last one fits only 8 pages: they are charged, and the memcg goes
    # OOM only for the page that finds no room at all
    assert ooms and ooms[0]["usage"] == 1000
    assert kills(r)[0]["comm"] == "hog"
    # the killed task gets past memory.max by the one page it was faulting, no more
    forced = where(events(r, "sim:memcg_force_charge"), path="/c")
    assert [(f["pages"], f["why"], f["usage"]) for f in forced] == [(1, "dying", 1001)]


def test_memcg_peak_usage_is_the_high_water_mark_not_the_largest_sample(simulate):
    from oomactors.report import summarize
    r = simulate(config({
        "burst": {"uid": 1000, "memcg": "/p", "start": "300ms", "program": [
            {"op": "alloc", "size": "100MiB"}, {"op": "free", "size": "all"}, *IDLE]},
    }, memcgs=[{"path": "/p"}], duration="3s", run={"meminfo_interval": "1s"}))
    samples = [u["usage"] for u in events(r, "sim:memcg_usage") if u["path"] == "/p"]
    assert max(samples) < 100 * 256  # the periodic samples missed the burst
    s = summarize(r.records, seed=r.seed, hz=r.hz, reason=r.reason)
    assert s["memcgs"]["/p"]["peak_usage"] == 100 * 256


# --- console ---------------------------------------------------------------------------------

def test_ratelimit_renews_strictly_after_the_interval_and_reports_what_it_missed():
    from types import SimpleNamespace
    from oomactors.kernel.ratelimit import RatelimitState, ___ratelimit
    said = []
    m = SimpleNamespace(now=100, emit=lambda name, pid, *f: said.append((name, m.now, *f)))
    rs = RatelimitState(interval=10, burst=2)
    got = []
    for now in (100, 101, 105, 110, 111, 111):
        m.now = now
        got.append(___ratelimit(m, rs, "oom_kill_process"))
    # two per window; t=110 is begin + interval, not past it: still suppressed
    assert got == [True, True, False, False, True, True]
    assert said == [("sim:callbacks_suppressed", 111, "oom_kill_process", 2)]


def test_warn_alloc_is_ratelimited_with_a_callbacks_suppressed_line(simulate):
    from oomactors.report import console_lines
    r = simulate(config({"dmabuf": {"uid": 0, "program": [{"op": "repeat", "steps": [
        {"op": "alloc", "size": "64KiB", "kind": "kernel", "order": 4, "gfp": "GFP_KERNEL",
         "on_fail": "continue"}, {"op": "sleep", "time": "500ms"}]}]}},
        machine={"memory": "256MiB", "fragmentation": 1.0}, duration="12s"))
    lines = [x.split("] ", 1)[1] for x in console_lines(r.records, hz=r.hz)]
    fails = [x for x in lines if "page allocation failure" in x]
    suppressed = [x for x in lines if "callbacks suppressed" in x]
    assert len(fails) == 2 and suppressed
    # warn_alloc's own line: mode by %pGg, the nodemask, then the cpuset and its mems
    assert fails[0] == ("dmabuf: page allocation failure: order:4, mode:0xcc0(GFP_KERNEL), "
                        "nodemask=(null),cpuset=/,mems_allowed=0")
    # every failed allocation between the two printed ones was swallowed and is counted
    printed = events(r, "sim:page_alloc_failure")
    failed = [e for e in where(events(r, "sim:slowpath_exit"), result="fail")
              if printed[0]["i"] < e["i"] < printed[1]["i"]]
    assert suppressed == [f"warn_alloc: {len(failed) - 1} callbacks suppressed"]  # less the 2nd
    assert lines == [fails[0], suppressed[0], fails[1]]  # reported before the next message
    # the window renews strictly after 10 s
    assert printed[1]["t"] - printed[0]["t"] > 10 * r.hz


def test_a_victim_without_an_mm_is_skipped_with_the_kernel_line():
    from oomactors import sim
    from oomactors.actors.user import new_process
    from oomactors.kernel import gfp as G
    from oomactors.kernel.oom_kill import OomControl, __oom_kill_process
    from oomactors.report import console_lines
    m = sim.build(config({"a": {"uid": 1000, "program": IDLE}}))
    m.records = []  # the events, for the asserts (nothing keeps them otherwise)
    m.sinks.append(m.records.append)
    victim = new_process(m, "gone", 1000, frozenset(), 0)
    cur = new_process(m, "cur", 1000, frozenset(), 0)
    victim.mm = None  # exit_mm already ran
    __oom_kill_process(m, victim, "Out of memory", OomControl([], None, None, G.GFP_KERNEL, 0), cur)
    assert not events(m.records, "sim:oom_kill")
    lines = [x.split("] ", 1)[1] for x in console_lines(m.records, hz=m.hz)]
    assert lines == [f"Out of memory: OOM victim {victim.pid} (gone) is already exiting. Skip killing the task"]


@pytest.mark.parametrize("mask, text", [
    ("0", "0x0()"),
    ("GFP_KERNEL | __GFP_NORETRY | __GFP_NOWARN", "0x12cc0(GFP_KERNEL|__GFP_NOWARN|__GFP_NORETRY)"),
    ("GFP_HIGHUSER_MOVABLE | __GFP_COMP", "0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP)"),
    ("GFP_KERNEL | __GFP_HARDWALL", "0x100cc0(GFP_USER)"),
    ("GFP_KERNEL | ~__GFP_KSWAPD_RECLAIM", "0x4c0(__GFP_IO|__GFP_FS|__GFP_DIRECT_RECLAIM)"),
    ("GFP_ATOMIC | __GFP_NOWARN", "0x2a20(GFP_ATOMIC|__GFP_NOWARN)"),
])
def test_format_gfp_follows_the_kernel_name_table(mask, text):
    from oomactors.kernel.gfp import format_gfp, parse_gfp
    assert format_gfp(0 if mask == "0" else parse_gfp(mask)) == text


def test_a_page_cache_read_is_charged_with_the_mappings_gfp_kernel_constraint(simulate):
    # the reader's cache is protected (memory.min), the holder's anon cannot be swapped:
    # the read's charge goes to the memcg OOM killer
    r = simulate(config({
        "holder": {"uid": 1000, "memcg": "/r/b", "program": [{"op": "alloc", "size": "30MiB"}, *IDLE]},
        "reader": {"uid": 1000, "memcg": "/r/a", "oom_score_adj": -1000, "start": "1s", "program": [
            {"op": "touch_file", "size": "8MiB", "mapped": False}, *IDLE]},
    }, memcgs=[{"path": "/r", "max": "32MiB"}, {"path": "/r/a", "min": "32MiB"}, {"path": "/r/b"}],
        machine={"page_cache": "0"}, duration="3s"))
    from oomactors.report import console_lines
    # read(2)'s add_to_page_cache_lru: mapping_gfp_constraint(mapping, GFP_KERNEL)
    invoked = [x for x in console_lines(r.records, hz=r.hz) if "invoked oom-killer" in x]
    assert invoked and all("gfp_mask=0xcc0(GFP_KERNEL)" in x for x in invoked)


def test_kswapd_and_throttled_reclaimers_do_not_freeze_time():
    """ZONE_DMA free with nothing reclaimable there: kswapd finds the node balanced through
    DMA while allow_direct_reclaim keeps the growers throttled, and the two wake each other
    (5.10's prepare_kswapd_sleep wakes pfmemalloc_wait, the throttled wake kswapd).  Each
    round costs kswapd CPU time, so virtual time moves on (it used to stand still)."""
    from oomactors.sim import run
    cfg = throttle_config()
    assert cfg.machine.dma > 0
    per_jiffy: dict[int, int] = {}

    def sink(rec: tuple) -> None:
        n = per_jiffy[rec[0]] = per_jiffy.get(rec[0], 0) + 1
        assert n < 100_000, f"jiffy {rec[0]}: {n} events and time stands still"
    r = run(cfg, sinks=[sink], keep_records=True, duration=3 * cfg.kernel.hz)
    assert r.reason == "duration" and r.end_jiffies == 3 * r.hz
    wakes = events(r, "vmscan:mm_vmscan_kswapd_wake")
    assert wakes and max(per_jiffy.values()) < 100_000
    kswapd = next(t for t in r.machine.tasks.values() if t.comm == "kswapd0")
    assert kswapd.cpu_ns >= len(wakes) * 20_000 // 2


def _double_kill_config(profile: str) -> Config:
    return config({
        "hog": {"uid": 1000, "rss": "300MiB", "program": IDLE},
        "small": {"uid": 1000, "rss": "30MiB", "oom_score_adj": 1000, "program": IDLE},
        "grower": {"uid": 1000, "start": "200ms", "program": GROW},
    }, machine={"memory": "512MiB"}, kernel={"profile": profile}, duration="3s")


def test_6_1_exit_mmap_hides_the_victim_before_its_gathered_pages_are_free():
    """6.1's exit_mmap sets MMF_OOM_SKIP after unmap_vmas, before tlb_finish_mmu frees the
    pages still in the mmu_gather (all of a victim under ~38 MiB): an OOM in that window
    passes over the dying victim and kills a second task, as the 6.1 guest in QEMU did.
    Held at that point for 5 jiffies, the model shows it; 5.10 (MMF_OOM_SKIP once the
    memory is reaped) kills the second task only after the first one's pages were freed
    and used up again."""
    from oomactors.schedule import Scheduler
    from oomactors.sim import run

    class HoldThere(Scheduler):
        def decide(self, index: int, pid: int, point: str) -> int:
            return 5 if point == "exit.tlb_finish_mmu" else 0

    def outcome(profile: str, scheduler):
        r = run(_double_kill_config(profile), keep_records=True, scheduler=scheduler)
        small = pids_of(r, "small")[0]
        freed = next(e for e in events(r, "sim:exit_mm") if e["pid"] == small)
        skip = next(e for e in events(r, "sim:mmf_oom_skip") if e["pid"] == small)
        return [k["comm"] for k in kills(r)], kills(r), freed, skip

    names, ks, freed, skip = outcome("linux-6.1", HoldThere())
    assert names[:2] == ["small", "hog"]
    # the second kill came after small was hidden and before its pages were back
    assert skip["by"] == "exit_mmap" and skip["t"] <= ks[1]["t"] < freed["t"]
    assert freed["pages"] >= 30 * 256  # all of it was still gathered
    # without the hold the window closes within the jiffy: no kill inside it
    names, ks, freed, _ = outcome("linux-6.1", None)
    assert names[:2] == ["small", "hog"] and ks[1]["t"] > freed["t"]
    # 5.10: the victim is hidden only once reaped; the next kill waits for real pressure
    names, ks, freed, skip = outcome("linux-5.10", HoldThere())
    assert names[:2] == ["small", "hog"] and skip["by"] == "oom_reaper"
    assert ks[1]["t"] > freed["t"] and ks[1]["t"] > skip["t"]
