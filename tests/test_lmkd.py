"""Android's lmkd in PSI mode (policies/lmkd.py): the kill-reason ladder, the oom_score_adj
bands and kill_timeout_ms on purpose-built configs, read from the ``userspace:kill`` events
(whose reason is ``"<REASON>: <description>; min_score_adj=<n>"``).

``configs/userspace-lmkd.toml``: a phone-like machine with apps at Android's adj levels and
a game that allocates 700MiB.  LOW_MEM (floor 701) kills the cached apps, highest adj first;
the previous app (700) and home (600) wait until swap runs low (LOW_MEM_AND_SWAP, floor 201);
the perceptible app (200) and the foreground game (0) are never killed.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from helpers import events, where
from oomactors.config import Config
from policies.lmkd import (CRITICAL, DIRECT_RECLAIM, MEDIUM, NO_RECLAIM, WMARK_HIGH, WMARK_LOW, WMARK_MIN,
                           WMARK_NONE, Lmkd, LmkdParams, calc_zone_watermarks, lowest_watermark,
                           swap_utilization)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = tomllib.loads((ROOT / "configs/userspace-lmkd.toml").read_text())
ADJ = {t["name"]: t.get("oom_score_adj", 0) for t in SHIPPED["tasks"]}
REASON = re.compile(r"^([A-Z_]+): (.*); min_score_adj=(-?\d+)$")


def variant(base: dict | None = None, *, policy: dict | None = None, tasks: dict | None = None,
            **sections: dict) -> Config:
    data = copy.deepcopy(SHIPPED if base is None else base)
    data["policy"].update(policy or {})
    for name, patch in (tasks or {}).items():
        next(t for t in data["tasks"] if t["name"] == name).update(patch)
    for name, patch in sections.items():
        data.setdefault(name, {}).update(patch)
    return Config.model_validate(data)


def kills(result: Any) -> list[dict]:
    """lmkd's kills: comm, time (ms), reason, description, min_score_adj."""
    out = []
    for ev in events(result, "userspace:kill"):
        m = REASON.match(ev["reason"])
        assert m is not None, ev["reason"]
        out.append({"pid": ev["pid"], "comm": ev["comm"], "ms": ev["t"] * 1000 // result.hz,
                    "reason": m[1], "desc": m[2], "min": int(m[3]), "sig": ev["sig"]})
    return out


def exit_ms(result: Any, comm: str) -> int | None:
    ev = where(events(result, "sched:sched_process_exit"), comm=comm)
    return ev[0]["t"] * 1000 // result.hz if ev else None


@pytest.fixture(scope="module")
def shipped(simulate):
    return simulate("configs/userspace-lmkd.toml")


def test_bands_highest_adj_first_and_never_below_the_floor(shipped):
    k = kills(shipped)
    assert [(e["comm"], e["reason"], e["min"]) for e in k] == [
        ("cached_b", "LOW_MEM", 701), ("cached_a", "LOW_MEM", 701),
        ("previous", "LOW_MEM_AND_SWAP", 201), ("launcher", "LOW_MEM_AND_SWAP", 201)]
    # cached_b (950, 60MiB) goes before cached_a (900, 120MiB): adj first, size does not matter
    assert ADJ["cached_b"] > ADJ["cached_a"]
    # every victim is at or above its reason's floor; nobody below 201 was touched
    assert all(ADJ[e["comm"]] >= e["min"] and e["sig"] == 9 for e in k)
    for comm in ("music", "game", "system_server", "surfaceflinger"):
        assert exit_ms(shipped, comm) is None, comm
    assert not events(shipped, "sim:oom_kill")
    # lmkd waits for each victim (kill_timeout_ms = 100): the next kill comes after its death
    for a, b in zip(k, k[1:]):
        assert a["ms"] <= exit_ms(shipped, a["comm"]) <= a["ms"] + 100 <= b["ms"]
    # each victim's memory was reaped right away (process_mrelease)
    assert {e["pid"] for e in events(shipped, "userspace:mrelease")} == {e["pid"] for e in k}


def test_the_floor_is_what_spares_the_previous_app(simulate, shipped):
    """With lowmem_min_oom_score = 600, LOW_MEM itself takes the previous app (700) and home
    (600) -- seconds before swap runs low, where the default floor (701) made lmkd wait.
    12 s: the fourth kill comes at 11.1 s.  Since reclaim passes lost the model's old
    one-slab-page minimum (5.10 has none), kswapd reclaims more by 11 s (13606 pages, not
    8515) and each LOW_MEM kill comes 0.2-0.4 s later."""
    low = kills(simulate(variant(policy={"lowmem_min_oom_score": 600}, run={"duration": "12s"})))
    assert [(e["comm"], e["reason"], e["min"]) for e in low[:4]] == [
        ("cached_b", "LOW_MEM", 600), ("cached_a", "LOW_MEM", 600),
        ("previous", "LOW_MEM", 600), ("launcher", "LOW_MEM", 600)]
    default_previous = next(e["ms"] for e in kills(shipped) if e["comm"] == "previous")
    assert low[2]["ms"] < default_previous - 1000
    # and the floor still holds: 200 and below survive
    assert all(ADJ[e["comm"]] >= 600 for e in low)


STUCK = {"cached_b": {"program": [{"op": "block", "time": "100s"}]}}  # D state, mmap_lock held


def test_kill_timeout_moves_on_from_a_stuck_victim(simulate):
    r = simulate(variant(policy={"kill_timeout_ms": 100}, tasks=STUCK, run={"duration": "8s"}))
    k = kills(r)
    assert [e["comm"] for e in k[:2]] == ["cached_b", "cached_a"]
    assert exit_ms(r, "cached_b") is None           # it never died (SIGKILL waits for the block)
    assert k[1]["ms"] - k[0]["ms"] >= 100           # but after kill_timeout_ms lmkd went on
    # its reaper could not take the mmap_lock the stuck victim holds
    assert where(events(r, "userspace:mrelease"), comm="cached_b")[0]["result"] == -11


def test_without_kill_timeout_lmkd_waits_for_the_victim_forever(simulate):
    r = simulate(variant(policy={"kill_timeout_ms": 0}, tasks=STUCK, run={"duration": "10s"}))
    assert [e["comm"] for e in kills(r)] == ["cached_b"]
    # the machine runs out of memory meanwhile: the kernel's OOM killer steps in
    assert [e["comm"] for e in events(r, "sim:oom_kill")][:1] == ["cached_a"]


SAME_ADJ = {"cached_a": {"oom_score_adj": 950, "rss": "60MiB"},
            "cached_b": {"oom_score_adj": 950, "rss": "120MiB"}}


@pytest.mark.parametrize("heaviest, adj_set_later, first", [
    (False, False, "cached_a"),   # the tail of the 950 list: registered first (lower pid)
    (True, False, "cached_b"),    # kill_heaviest_task: the larger one
    (False, True, "cached_b"),    # cached_a re-registered when it wrote its adj: now at the head
])
def test_within_an_adj_the_oldest_registration_or_the_heaviest(simulate, heaviest, adj_set_later, first):
    tasks = copy.deepcopy(SAME_ADJ)
    if adj_set_later:
        tasks["cached_a"].update(oom_score_adj=900, program=[
            {"op": "sleep", "time": "2s"}, {"op": "set_oom_score_adj", "value": 950},
            {"op": "sleep", "time": "100s"}])
    r = simulate(variant(policy={"kill_heaviest_task": heaviest}, tasks=tasks, run={"duration": "7s"}))
    k = kills(r)
    assert k[0]["comm"] == first and k[0]["reason"] == "LOW_MEM"


THRASH = """
[machine]
cpus = 4
memory = "1GiB"
swap = "0"
page_cache = "32MiB"
dma = "0"  # no ZONE_DMA (CONFIG_ZONE_DMA=n): tuned without it

[run]
duration = "4s"
stop_when_idle = false

[policy]
name = "lmkd"
# the reader streams (touch_file): what it reads back was never active, so its refaults
# are no memory stalls (nor on 5.10; docs/thrashing.md): a lower partial-stall trigger
# wakes lmkd
psi_partial_stall_ms = 10

[[tasks]]
name = "system_server"
oom_score_adj = -900
rss = "200MiB"
program = [{ op = "sleep", time = "100s" }]

[[tasks]]
name = "music"
oom_score_adj = 200
rss = "100MiB"
program = [{ op = "sleep", time = "100s" }]

[[tasks]]
name = "previous"
oom_score_adj = 700
rss = "100MiB"
program = [{ op = "sleep", time = "100s" }]

[[tasks]]
name = "cached"
oom_score_adj = 900
rss = "100MiB"
program = [{ op = "sleep", time = "100s" }]

[[tasks]]
name = "reader"
oom_score_adj = 0
rss = "10MiB"
program = [{ op = "repeat", steps = [{ op = "touch_file", size = "16MiB", rate = "256MiB/s" }] }]

[[tasks]]
name = "game"
oom_score_adj = 0
rss = "20MiB"
start = "1s"
program = [{ op = "alloc", size = "420MiB", rate = "100MiB/s" }, { op = "sleep", time = "100s" }]
"""


def test_thrashing_kills_down_to_perceptible(simulate):
    """No swap; a reader keeps re-reading page cache that reclaim keeps evicting: refaults
    (workingset_refault_file) reach more than the whole file LRU per second.  The thrashing
    reasons kill the cached app, then the previous one, and stop at the perceptible floor
    (201) -- the music player and the two adj-0 tasks live on."""
    base = tomllib.loads(THRASH)
    base["policy"]["thrashing_limit_critical"] = 100000
    r = simulate(Config.model_validate(base))
    k = kills(r)
    assert [e["comm"] for e in k] == ["cached", "previous"]
    assert all(e["reason"] in ("LOW_MEM_AND_THRASHING", "DIRECT_RECL_AND_THRASHING") and e["min"] == 201
               for e in k)
    pct = [int(re.search(r"thrashing \((\d+)%\)", e["desc"])[1]) for e in k]
    assert all(p > 90 for p in pct) and max(pct) > 100   # above the limit (100, less 10% per kill)
    assert r.machine.vmstat["workingset_refault_file"] > 0
    for comm in ("music", "reader", "game"):
        assert exit_ms(r, comm) is None


def test_critical_thrashing_reaches_the_perceptible_app(simulate):
    """At thrashing_limit_critical (3 x thrashing_limit: here 150%) the floor drops to 0."""
    base = tomllib.loads(THRASH)
    base["policy"]["thrashing_limit"] = 50
    base["run"]["duration"] = "6s"
    r = simulate(Config.model_validate(base))
    k = kills(r)
    assert [e["comm"] for e in k][:3] == ["cached", "previous", "music"]
    music = k[2]
    assert music["min"] == 0 and music["reason"].endswith("_THRASHING")
    assert int(re.search(r"thrashing \((\d+)%\)", music["desc"])[1]) >= 150
    # below the critical level the floor stays at 201
    assert all(e["min"] == 201 for e in k
               if int(re.search(r"thrashing \((\d+)%\)", e["desc"])[1]) < 150)


# --- the ladder itself, on chosen inputs -------------------------------------------------
class _Mi:
    def __init__(self, free_mb: int, swap_total_mb: int, swap_free_mb: int, anon_mb: int = 500,
                 shmem_mb: int = 0) -> None:
        kb = 1024
        self.MemFree, self.SwapTotal, self.SwapFree = free_mb * kb, swap_total_mb * kb, swap_free_mb * kb
        self.AnonPages, self.Shmem = anon_mb * kb, shmem_mb * kb


def ladder(params: dict | None = None, *, level=MEDIUM, events_=0, after_kill=False, wmark=WMARK_NONE,
           swap_low=False, thrashing=0, reclaim=NO_RECLAIM, file_lru=10000, check_filecache=False,
           mi=None):
    from policies.lmkd import Mem
    d = Lmkd(LmkdParams(**(params or {})))
    d.check_filecache = check_filecache
    mem = Mem(mi or _Mi(100, 512, 400), 1000)
    reason, _, floor, cut = d.kill_reason(level, events_, after_kill, wmark, swap_low, 100, mem, thrashing,
                                          reclaim, file_lru)
    return reason, floor, cut


def test_the_ladder_in_lmkds_order():
    assert ladder(after_kill=True, wmark=WMARK_MIN) == ("PRESSURE_AFTER_KILL", 0, False)
    assert ladder({"pressure_after_kill_min_score": 900}, after_kill=True, wmark=WMARK_MIN)[1] == 900
    assert ladder(after_kill=True, wmark=WMARK_LOW)[0] == "LOW_MEM"      # low is not under low
    assert ladder(level=CRITICAL, events_=1, wmark=WMARK_NONE) == ("NOT_RESPONDING", 0, False)
    assert ladder(level=CRITICAL, events_=0, wmark=WMARK_NONE)[0] is None  # a poll is no event
    # swap low and thrashing: perceptible apps only under the min watermark or critically
    assert ladder(swap_low=True, thrashing=150, wmark=WMARK_LOW) == ("LOW_SWAP_AND_THRASHING", 201, False)
    assert ladder(swap_low=True, thrashing=150, wmark=WMARK_MIN)[1] == 0
    assert ladder(swap_low=True, thrashing=300, wmark=WMARK_LOW)[1] == 0
    assert ladder(swap_low=True, wmark=WMARK_LOW) == ("LOW_MEM_AND_SWAP", 201, False)
    assert ladder(swap_low=True, wmark=WMARK_HIGH)[0] is None     # under high only: not yet
    # swap utilisation: off at its default (100)
    mi = _Mi(100, 512, 112, anon_mb=300)   # 400MiB of 700MiB swappable is out: 57%
    assert ladder(wmark=WMARK_LOW, mi=mi)[0] == "LOW_MEM"
    assert ladder({"swap_util_max": 50}, wmark=WMARK_LOW, mi=mi) == ("LOW_MEM_AND_SWAP_UTIL", 0, False)
    # thrashing with low memory or in direct reclaim: cuts the limit
    assert ladder(wmark=WMARK_LOW, thrashing=101) == ("LOW_MEM_AND_THRASHING", 201, True)
    assert ladder(wmark=WMARK_NONE, thrashing=101, reclaim=DIRECT_RECLAIM) == (
        "DIRECT_RECL_AND_THRASHING", 201, True)
    assert ladder(wmark=WMARK_HIGH, thrashing=101)[0] is None
    # after thrashing, a small file cache keeps background apps dying
    assert ladder({"filecache_min_kb": 80000}, check_filecache=True, file_lru=10000, wmark=WMARK_NONE) == (
        "LOW_FILECACHE_AFTER_THRASHING", 201, False)
    assert ladder({"filecache_min_kb": 80000}, check_filecache=True, file_lru=30000, wmark=WMARK_NONE)[0] is None
    # the last rung; its floor is at least 201 whatever the property says
    assert ladder(wmark=WMARK_LOW) == ("LOW_MEM", 701, False)
    assert ladder(wmark=WMARK_MIN)[0] == "LOW_MEM"
    assert ladder(wmark=WMARK_HIGH)[0] is None
    assert ladder({"lowmem_min_oom_score": 0}, wmark=WMARK_LOW)[1] == 201


def test_defaults_follow_low_ram():
    hi, lo = LmkdParams(), LmkdParams(low_ram=True)
    assert (hi.partial_stall_ms, hi.thrashing_limit_pct, hi.thrashing_decay_pct, hi.thrashing_critical_pct) == (
        70, 100, 10, 300)
    assert (lo.partial_stall_ms, lo.thrashing_limit_pct, lo.thrashing_decay_pct, lo.thrashing_critical_pct) == (
        200, 30, 50, 90)
    assert (hi.psi_complete_stall_ms, hi.kill_timeout_ms, hi.swap_free_low_percentage, hi.lowmem_min_score) == (
        700, 100, 10, 701)


def test_watermarks_and_swap_utilization():
    class Z:
        def __init__(self, present, mn, lo, hi, prot):
            self.present, self.min, self.low, self.high, self.protection = present, mn, lo, hi, prot
    zones = [Z(1000, 10, 12, 15, (0, 100, 200)), Z(5000, 40, 50, 60, (0, 0, 0)), Z(0, 99, 99, 99, (9,))]
    wm = calc_zone_watermarks(zones)
    assert wm == (250, 262, 275)    # each populated zone's marks plus its largest reserve
    assert [lowest_watermark(f, wm) for f in (249, 250, 262, 275)] == [WMARK_MIN, WMARK_LOW, WMARK_HIGH, WMARK_NONE]
    from policies.lmkd import Mem
    mem = Mem(_Mi(100, 512, 112, anon_mb=300, shmem_mb=0), 1000)
    assert swap_utilization(mem, mem.free_swap) == 400 * 100 // 700


def test_one_daemon_instance_gives_the_same_run_every_time():
    """A daemon keeps state while it runs (lmkd's thrashing limit, its kill history): each
    run starts from a fresh copy, so reusing an instance cannot change a run."""
    from oomactors import sim
    from policies.registry import load_policy

    cfg = variant()
    pol = load_policy("lmkd", cfg.policy.params)
    first, second = (sim.run(cfg, policy=pol, keep_records=True) for _ in range(2))
    assert first.records == second.records
    assert events(first, "userspace:kill")
