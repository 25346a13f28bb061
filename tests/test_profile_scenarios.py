"""Kernel eras on real runs: the same configs under several ``kernel.profile`` values,
each outcome read from the events and checked against the era's documented behaviour
(kernel-oom-killer.md §5.5, §6, §7.2, §9, §12.4; kernel-allocation.md §6.2, §7).

Every run goes through the ``simulate`` fixture, so page conservation and oom_lock
mutual exclusion are checked after every event as well.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import check_one_victim_at_a_time, events, pids_of, where

from oomactors.cli import main
from oomactors.config import Config

ROOT = Path(__file__).resolve().parent.parent
PAGE = 4096
LONG_MIN = -(1 << 63)
CHECKLIST = ("checklist_24:first_failure_in_5s", "checklist_24:failing_less_than_1s",
             "checklist_24:fewer_than_10_failures", "checklist_24:killed_within_5s")


def era_config(name: str, profile: str) -> Config:
    """configs/<name> with ``[kernel] profile`` replaced; nothing else changes."""
    data = tomllib.loads((ROOT / "configs" / name).read_text())
    data.setdefault("kernel", {})["profile"] = profile
    return Config.model_validate(data)


@pytest.fixture(scope="module")
def era(simulate):
    """era(config, profile) -> the run, simulated once per module."""
    cache: dict[tuple[str, str], object] = {}

    def run(name: str, profile: str):
        if (name, profile) not in cache:
            result = simulate(era_config(name, profile))
            assert events(result, "sim:run_start")[0]["profile"] == profile
            cache[name, profile] = result
        return cache[name, profile]
    return run


def only(pids: list[int]) -> int:
    assert len(pids) == 1, pids
    return pids[0]


def hz_of(result) -> int:
    return events(result, "sim:run_start")[0]["hz"]


def kills(result) -> list[dict]:
    return events(result, "sim:oom_kill")


def c_div(a: int, b: int) -> int:
    """C's integer division (truncates towards zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def rows_of(header: dict) -> list[dict]:
    """The task table of a sim:oom_header (dump_tasks), as dicts."""
    keys = ("pid", "uid", "tgid", "total_vm", "rss", "pgtables_bytes", "swapents", "oom_score_adj", "comm")
    return [dict(zip(keys, row)) for row in header["rows"]]


def header_before(result, kill: dict) -> dict:
    return [h for h in events(result, "sim:oom_header") if h["i"] < kill["i"]][-1]


def pick(rows: list[dict], score, *, ties_to_later: bool) -> dict:
    """select_bad_process over the rows (creation order) with a hand-written score."""
    best, best_points = None, None
    for r in rows:
        s = score(r)
        if best is None or s > best_points or (s == best_points and ties_to_later):
            best, best_points = r, s
    return best


def badness_510(r: dict, totalpages: int) -> int:
    """mm/oom_kill.c 5.10, from a task-table row."""
    if r["oom_score_adj"] == -1000:
        return LONG_MIN
    return r["rss"] + r["swapents"] + r["pgtables_bytes"] // PAGE + r["oom_score_adj"] * (totalpages // 1000)


def badness_419(r: dict, totalpages: int) -> int:
    """4.17-5.8: the same, clamped to at least 1 for an eligible task."""
    if r["oom_score_adj"] == -1000:
        return 0
    return max(1, badness_510(r, totalpages))


# --- 1. Linux 2.4: the out_of_memory() checklist and badness() -------------------------------


CLASSIC = "classic-2.4.toml"


def test_24_checklist_delays_the_first_kill(era):
    r = era(CLASSIC, "linux-2.4")
    hz = hz_of(r)
    enters = events(r, "sim:out_of_memory_enter")
    returns = events(r, "sim:out_of_memory_return")
    kill = kills(r)[0]
    before = [x for x in returns if x["i"] < kill["i"]]
    # the burst opens with a failure more than 5 s after the previous one (there was none)
    assert before[0]["reason"] == "checklist_24:first_failure_in_5s"
    assert {x["reason"] for x in before} == {"checklist_24:first_failure_in_5s",
                                             "checklist_24:failing_less_than_1s",
                                             "checklist_24:fewer_than_10_failures"}
    # each test passes in the checklist's order: < 1 s of failing first, then the count
    first_count = next(x["i"] for x in before if x["reason"] == "checklist_24:fewer_than_10_failures")
    assert all(x["reason"] != "checklist_24:failing_less_than_1s" for x in before if x["i"] > first_count)
    assert len(where(before, reason="checklist_24:fewer_than_10_failures")) == 9  # failures 1..9
    assert len(before) >= 10
    # the kill comes from the 10th counted failure, a second or more after the first entry
    assert kill["t"] - enters[0]["t"] >= hz
    killed = [x for x in returns if x["reason"] == "killed"]
    assert killed[0]["i"] > kill["i"] and killed[0]["t"] == kill["t"]


def test_24_never_kills_twice_within_5s(era):
    r = era(CLASSIC, "linux-2.4")
    hz = hz_of(r)
    ks = kills(r)
    assert len(ks) >= 2
    returns = events(r, "sim:out_of_memory_return")
    for prev, nxt in zip(ks, ks[1:]):
        assert nxt["t"] - prev["t"] >= 5 * hz
        # the count starts again after a kill: at least 10 more failures in between
        assert len([x for x in returns if prev["i"] < x["i"] < nxt["i"]]) >= 10
    # and the 5 s gate really held a kill back: every such refusal is < 5 s after a kill
    held = where(returns, reason="checklist_24:killed_within_5s")
    assert held
    for x in held:
        last = [k for k in ks if k["i"] < x["i"]][-1]
        assert x["t"] - last["t"] < 5 * hz
    # every out_of_memory() call either ran the checklist or killed
    assert {x["reason"] for x in returns} <= set(CHECKLIST) | {"killed"}


def test_24_badness_picks_another_victim_than_510(era):
    r24, r510 = era(CLASSIC, "linux-2.4"), era(CLASSIC, "linux-5.10")
    # 2.4: total_vm, quartered for root; the CPU-time and run-time divisors are both 1
    # here: every kill is before t = 1024 jiffies (10.24 s at HZ 100) on one CPU, so no
    # task has 1024 jiffies of CPU time (cpu_time >> 10 = 0) nor 2^17 of run time
    k24 = kills(r24)[0]
    assert hz_of(r24) == 100 and k24["t"] < 1024
    rows = rows_of(header_before(r24, k24))
    expect = pick(rows, lambda x: x["total_vm"] // 4 if x["uid"] == 0 else x["total_vm"], ties_to_later=False)
    chosen = [c for c in events(r24, "sim:oom_victim_chosen") if c["i"] < k24["i"]][-1]
    assert (chosen["pid"], k24["pid"]) == (expect["pid"], expect["pid"])
    assert chosen["points"] == expect["total_vm"]
    # 5.10 on the same config: rss + swap + page tables, no root bonus
    k510 = kills(r510)[0]
    header = header_before(r510, k510)
    rows = rows_of(header)
    expect510 = pick(rows, lambda x: badness_510(x, header["totalpages"]), ties_to_later=True)
    assert k510["pid"] == expect510["pid"]
    # different victims: 2.4 spares the bigger root daemon, 5.10 kills it
    assert (k24["comm"], k24["uid"]) == ("worker", 1000)
    assert (k510["comm"], k510["uid"]) == ("rootd", 0)
    assert k510["pid"] == only(pids_of(r24, "rootd"))


def test_24_kswapd_reaches_out_of_memory(era):
    r = era(CLASSIC, "linux-2.4")
    kswapd = only(pids_of(r, "kswapd0"))
    enters = where(events(r, "sim:out_of_memory_enter"), pid=kswapd)
    assert enters and {e["gfp_flags"] for e in enters} == {"0xcc0(GFP_KERNEL)"}
    returns = where(events(r, "sim:out_of_memory_return"), pid=kswapd)
    assert len(returns) == len(enters)
    assert {x["reason"] for x in returns} <= set(CHECKLIST) | {"killed"}
    # it happens on its own: kswapd's balancing failed first (balance_pgdat reclaimed nothing)
    failures = where(events(r, "sim:kswapd_failures"), pid=kswapd)
    assert failures and failures[0]["i"] < enters[0]["i"]


def test_24_never_kills_while_a_swap_slot_is_free(era):
    r = era("classic-2.4-swap.toml", "linux-2.4")
    hz = hz_of(r)
    cfg = era_config("classic-2.4-swap.toml", "linux-2.4")
    swap_pages = cfg.machine.swap // PAGE
    enters = events(r, "sim:out_of_memory_enter")
    returns = events(r, "sim:out_of_memory_return")
    # out of memory for well over a second and many more than 10 failures...
    assert enters[-1]["t"] - enters[0]["t"] > hz and len(returns) > 10
    # ...yet every call stopped at the first test, and nobody was killed
    assert {x["reason"] for x in returns} == {"checklist_24:swap_left"}
    assert not kills(r) and not events(r, "oom:mark_victim")
    assert r.reason == "duration"
    # swap was used (the worker's memory went there) but never filled
    samples = events(r, "sim:meminfo")
    assert all(0 < s["swap_free"] for s in samples)
    assert min(s["swap_free"] for s in samples) < swap_pages
    # the same machine under 5.10 kills
    assert kills(era("classic-2.4-swap.toml", "linux-5.10"))


# --- 2. the same config under several profiles ---------------------------------------------------


@pytest.mark.parametrize("profile, which", [("linux-4.19", 0), ("linux-2.6.36", 0),
                                            ("linux-5.10", 1), ("linux-6.12", 1)])
def test_ties_first_before_53_later_since(era, profile, which):
    r = era("era-ties.toml", profile)
    twins = pids_of(r, "twin")
    assert len(twins) == 2 and twins[0] < twins[1]
    ks = kills(r)
    assert [k["pid"] for k in ks] == [twins[which]]
    # they really were equal
    rows = [x for x in rows_of(header_before(r, ks[0])) if x["comm"] == "twin"]
    assert rows[0]["rss"] == rows[1]["rss"] and rows[0]["pgtables_bytes"] == rows[1]["pgtables_bytes"]


def test_419_clamp_kills_the_first_tiny_task(era):
    r = era("era-clamp.toml", "linux-4.19")
    pause, cache = only(pids_of(r, "pause")), only(pids_of(r, "cache"))
    ks = kills(r)
    assert ks[0]["pid"] == pause
    header = header_before(r, ks[0])
    rows = {x["comm"]: x for x in rows_of(header)}
    # both clamp to 1 (their real scores are far below zero); the first scanned stays
    assert badness_510(rows["pause"], header["totalpages"]) < 0
    assert badness_510(rows["cache"], header["totalpages"]) < 0
    assert badness_419(rows["pause"], header["totalpages"]) == badness_419(rows["cache"], header["totalpages"]) == 1
    chosen = where(events(r, "sim:oom_victim_chosen"), pid=pause)[0]
    assert chosen["points"] == 1
    # killing pause freed nothing: the next OOM kills cache
    assert [k["pid"] for k in ks] == [pause, cache]


def test_510_no_clamp_kills_the_bigger_negative_task(era):
    r = era("era-clamp.toml", "linux-5.10")
    cache = only(pids_of(r, "cache"))
    ks = kills(r)
    assert [k["pid"] for k in ks] == [cache]
    header = header_before(r, ks[0])
    rows = rows_of(header)
    expect = pick(rows, lambda x: badness_510(x, header["totalpages"]), ties_to_later=True)
    chosen = where(events(r, "sim:oom_victim_chosen"), pid=cache)[0]
    assert expect["pid"] == cache and chosen["points"] == badness_510(expect, header["totalpages"]) < 0


@pytest.mark.parametrize("profile", ["linux-2.6.36", "linux-4.19"])
def test_sacrifice_child_dies_instead_of_the_parent(era, profile):
    r = era("era-sacrifice.toml", profile)
    master, child = only(pids_of(r, "master")), only(pids_of(r, "child"))
    sac = events(r, "sim:oom_sacrifice")
    assert [s["pid"] for s in sac] == [master]
    chosen = events(r, "sim:oom_victim_chosen")[0]
    ks = kills(r)
    assert chosen["pid"] == master
    assert [k["pid"] for k in ks] == [child]
    assert chosen["i"] < sac[0]["i"] < ks[0]["i"]
    assert where(events(r, "oom:mark_victim"), pid=child) and not where(events(r, "oom:mark_victim"), pid=master)
    assert not where(events(r, "sched:sched_process_exit"), pid=master)
    # the printed score, by hand from the task table: 2.6.36's badness is already per
    # mille of (rss + swap) -- no page tables in the 2.6.36 rewrite; 4.x prints
    # chosen_points * 1000 / totalpages of rss + swap + page tables
    header = header_before(r, ks[0])
    row = {x["pid"]: x for x in rows_of(header)}[master]
    t = header["totalpages"]
    if profile == "linux-2.6.36":
        expect = (row["rss"] + row["swapents"]) * 1000 // t
        assert chosen["points"] == expect
    else:
        assert chosen["points"] == badness_419(row, t)
        expect = chosen["points"] * 1000 // t
    assert sac[0]["score"] == expect


def test_510_kills_the_parent(era):
    r = era("era-sacrifice.toml", "linux-5.10")
    master, child = only(pids_of(r, "master")), only(pids_of(r, "child"))
    assert not events(r, "sim:oom_sacrifice")
    ks = kills(r)
    assert ks[0]["pid"] == master
    # the child outlives its parent and is killed by a later OOM
    assert [k["pid"] for k in ks] == [master, child]


def test_510_queues_the_reaper_at_once(era):
    r = era("era-reaper.toml", "linux-5.10")
    marks = events(r, "oom:mark_victim")
    assert len(marks) == 2
    for mark in marks:
        wake = where(events(r, "oom:wake_reaper"), pid=mark["pid"])
        assert len(wake) == 1 and wake[0]["t"] == mark["t"] and wake[0]["i"] > mark["i"]
        assert where(events(r, "oom:start_task_reaping"), pid=mark["pid"])


def test_612_reaper_waits_2s_unless_the_victim_exits_first(era):
    r = era("era-reaper.toml", "linux-6.12")
    hz = hz_of(r)
    db, leaker = only(pids_of(r, "db")), only(pids_of(r, "leaker"))
    marks = {m["pid"]: m for m in events(r, "oom:mark_victim")}
    assert set(marks) == {db, leaker}
    end = events(r, "sim:run_end")[0]["t"]
    for pid, mark in marks.items():
        wake = where(events(r, "oom:wake_reaper"), pid=pid)
        exit_ = where(events(r, "sched:sched_process_exit"), pid=pid)
        if exit_ and exit_[0]["t"] < mark["t"] + 2 * hz:
            # exited first: the timer found MMF_OOM_SKIP and dropped it -- no reaping at all
            assert end >= mark["t"] + 2 * hz  # the timer did fire within the run
            assert not wake and not where(events(r, "oom:start_task_reaping"), pid=pid)
        else:
            assert len(wake) == 1 and wake[0]["t"] - mark["t"] >= 2 * hz
    # db sleeps in D state: queued exactly OOM_REAPER_DELAY later, then reaped
    wake = where(events(r, "oom:wake_reaper"), pid=db)[0]
    assert wake["t"] == marks[db]["t"] + 2 * hz
    reap = where(events(r, "oom:start_task_reaping"), pid=db)[0]
    assert reap["i"] > wake["i"]
    assert where(events(r, "sim:mmf_oom_skip"), pid=db)[0]["by"] == "oom_reaper"
    # the leaker exits by itself well within the delay
    exit_ = where(events(r, "sched:sched_process_exit"), pid=leaker)[0]
    assert exit_["t"] < marks[leaker]["t"] + 2 * hz and not where(events(r, "oom:wake_reaper"), pid=leaker)
    # meanwhile every OOM waited for db: one victim at a time
    assert where(events(r, "sim:out_of_memory_return"), reason="victim_pending")
    check_one_victim_at_a_time(r)


def test_612_exit_mmap_sets_mmf_oom_skip_for_a_victim_exiting_by_itself(era):
    r = era("era-reaper.toml", "linux-6.12")
    hz = hz_of(r)
    leaker = only(pids_of(r, "leaker"))
    mark = where(events(r, "oom:mark_victim"), pid=leaker)[0]
    skip = where(events(r, "sim:mmf_oom_skip"), pid=leaker)
    exit_ = where(events(r, "sched:sched_process_exit"), pid=leaker)[0]
    assert [s["by"] for s in skip] == ["exit_mmap"]
    assert mark["i"] < skip[0]["i"] < exit_["i"] and skip[0]["t"] < mark["t"] + 2 * hz
    # 6.0+: only once every VMA is unmapped, shared memory too (4.17-5.x set it as soon
    # as the anonymous memory was reaped, before unmapping the rest): the shmem victim of
    # era-pagefault gets the flag with sim:exit_mm, after tens of ms of unmapping
    pf = era("era-pagefault.toml", "linux-6.12")
    shmhog = only(pids_of(pf, "shmhog"))
    kill = where(kills(pf), pid=shmhog)[0]
    skip = where(events(pf, "sim:mmf_oom_skip"), pid=shmhog)
    exit_mm = where(events(pf, "sim:exit_mm"), pid=shmhog)[0]
    assert [s["by"] for s in skip] == ["exit_mmap"] and kill["shmem_rss"] > 0
    assert skip[0]["t"] == exit_mm["t"] > kill["t"] and skip[0]["i"] < exit_mm["i"]
    # 5.10's exit_mmap sets it too, but the reaper was queued at once and got there first
    r510 = era("era-reaper.toml", "linux-5.10")
    leaker510 = only(pids_of(r510, "leaker"))
    assert where(events(r510, "oom:start_task_reaping"), pid=leaker510)


def test_pagefault_oom_global_in_510_not_in_612(era):
    for profile, global_from_fault in (("linux-5.10", True), ("linux-6.12", False)):
        r = era("era-pagefault.toml", profile)
        shmhog = only(pids_of(r, "shmhog"))
        kill = where(kills(r), pid=shmhog)[0]
        # the victim's own fault failed: VM_FAULT_OOM reached the fault handler
        failed = [x for x in where(events(r, "sim:slowpath_exit"), pid=shmhog, result="fail") if x["i"] > kill["i"]]
        assert failed, profile
        from_fault = where(events(r, "sim:out_of_memory_enter"), gfp_flags="0x0()")
        if global_from_fault:
            # pagefault_out_of_memory: a global OOM with a zeroed oom_control, from the fault
            assert from_fault and from_fault[0]["pid"] == shmhog and from_fault[0]["i"] > failed[0]["i"]
        else:
            assert not from_fault
        # every other out_of_memory() came from the allocator, with the fault's gfp mask
        others = [e for e in events(r, "sim:out_of_memory_enter") if e["gfp_flags"] != "0x0()"]
        assert {e["gfp_flags"] for e in others} == {"0x100cca(GFP_HIGHUSER_MOVABLE)"}
        assert where(events(r, "sched:sched_process_exit"), pid=shmhog, reason="killed")


# --- 3. /proc/PID/oom_score ---------------------------------------------------------------------


def _score_inputs(r, name: str):
    cfg = era_config(name, "linux-5.10")
    swap = cfg.machine.swap // PAGE
    t = events(r, "sim:run_start")[0]["total_pages"] + swap
    # nothing ran short of memory, so each task still holds exactly its boot rss
    assert not events(r, "sim:out_of_memory_enter") and not events(r, "vmscan:mm_vmscan_node_reclaim")
    assert events(r, "sim:meminfo")[-1]["swap_free"] == swap
    rss = {g.name: g.rss // PAGE for g in cfg.tasks}
    scores = {ev["comm"]: ev["oom_score"] for ev in events(r, "sim:oom_score")}
    adj = {ev["comm"]: ev["oom_score_adj"] for ev in events(r, "sim:task_new")}
    points = {c: rss[c] + -(-rss[c] // 512) for c in rss}  # rss + one PTE page per 512
    return t, scores, adj, points


def test_oom_score_510_is_0_to_2000_with_666_for_an_idle_task(era):
    for profile in ("linux-5.10", "linux-6.12"):
        r = era("era-oom-score.toml", profile)
        t, scores, adj, points = _score_inputs(r, "era-oom-score.toml")
        for comm, pts in points.items():
            if adj[comm] == -1000:
                expect = 0
            else:
                badness = pts + adj[comm] * (t // 1000)
                expect = (1000 + c_div(badness * 1000, t)) * 2 // 3
            assert scores[comm] == expect, (profile, comm)
        assert scores["idle"] == 666
        assert scores["init"] == 0 and scores["protected"] == 0
        assert 1000 < scores["favored"] <= 2000
        # a negative badness divides towards zero, as C does: 335, not 334
        assert scores["shy"] == 335
        assert all(0 <= s <= 2000 for s in scores.values())


def test_oom_score_419_is_per_mille(era):
    r = era("era-oom-score.toml", "linux-4.19")
    t, scores, adj, points = _score_inputs(r, "era-oom-score.toml")
    for comm, pts in points.items():
        if adj[comm] == -1000:
            expect = 0
        else:
            expect = max(1, pts + adj[comm] * (t // 1000)) * 1000 // t
        assert scores[comm] == expect, comm
    assert scores["idle"] == 0 and scores["shy"] == 0    # badness 1: below one per mille
    assert scores["medium"] == points["medium"] * 1000 // t
    # the same task reads differently in 5.10
    r510 = era("era-oom-score.toml", "linux-5.10")
    s510 = {ev["comm"]: ev["oom_score"] for ev in events(r510, "sim:oom_score")}
    assert s510["medium"] == (1000 + scores["medium"]) * 2 // 3


# --- 4. a profile that does not exist ------------------------------------------------------------


def test_unknown_profile_exits_2_naming_kernel_profile(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[kernel]\nprofile = "linux-9"\n')
    for cmd in ("run", "validate"):
        res = CliRunner().invoke(main, [cmd, str(path)])
        assert res.exit_code == 2, res.output
        line = res.output.strip()
        assert "\n" not in line and "Traceback" not in line
        assert f"{path}: kernel.profile: unknown profile" in line and "linux-5.10" in line
