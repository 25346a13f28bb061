"""Memory cgroups (cgroup v2, Linux 5.10), modelled on the kernel's own selftests
(tools/testing/selftests/cgroup/test_memcontrol.c): each scenario's outcome read from its
events and from the run summary.

Every run goes through the ``simulate`` fixture, so page conservation -- including every
memcg's counters against the pages charged to it, and usage within memory.max but for
force charges -- and oom_lock mutual exclusion are checked after every event.
"""

from __future__ import annotations

import pytest

from helpers import events, pids_of, where
from oomactors.config import parse_config
from oomactors.errors import ConfigError
from oomactors.kernel.mmzone import MAX_RECLAIM_RETRIES
from oomactors.report import console_lines, summarize

MiB_PAGES = 256


def summary(result) -> dict:
    return summarize(result.records, seed=result.seed, hz=result.hz, reason=result.reason)


def memcg_events(result, path: str, name: str, *, local: bool | None = None) -> list[dict]:
    evs = where(events(result, "sim:memcg_event"), path=path, name=name)
    return evs if local is None else [e for e in evs if e["local"] == int(local)]


def samples(result, path: str) -> list[dict]:
    return where(events(result, "sim:memcg_usage"), path=path)


def outcomes(result) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for t in summary(result)["tasks"]:
        out.setdefault(t["comm"], set()).add(t["outcome"])
    return out


def never_above_max_but_forced(result, path: str) -> None:
    """Every usage sample is within memory.max, except after a force charge (by its pages)."""
    forced = 0
    force_ev = where(events(result, "sim:memcg_force_charge"), path=path)
    for s in samples(result, path):
        forced = sum(f["pages"] for f in force_ev if f["i"] < s["i"])
        assert s["usage"] <= s["max"] + forced, s


# --- test_memcg_max: a memcg at its limit, without swap ------------------------------------


@pytest.fixture(scope="module")
def memcg_max(simulate):
    return simulate("configs/memcg-max.toml")


def test_memcg_max_kills_inside_the_memcg_and_only_there(memcg_max):
    hog = pids_of(memcg_max, "hog")[0]
    kills = events(memcg_max, "sim:oom_kill")
    assert [(k["pid"], k["message"], k["oom_memcg"], k["task_memcg"]) for k in kills] == \
        [(hog, "Memory cgroup out of memory", "/work", "/work")]
    assert outcomes(memcg_max) == {"init": {"running"}, "hog": {"killed"}, "helper": {"running"},
                                   "outside": {"running"}}
    # the report is about the memcg: its constraint, its totalpages, its tasks only
    header = events(memcg_max, "sim:oom_header")[0]
    assert header["constraint"] == "CONSTRAINT_MEMCG"
    assert header["totalpages"] == 64 * MiB_PAGES  # memory.max + min(swap.max, no swap)
    assert sorted(r[8] for r in header["rows"]) == ["helper", "hog"]
    # the machine was nowhere near a global OOM
    assert all(e["gfp_flags"].startswith("0xcc0") for e in events(memcg_max, "sim:out_of_memory_enter"))


def test_memcg_max_events_follow_try_charge(memcg_max):
    maxes = memcg_events(memcg_max, "/work", "max", local=True)
    ooms = memcg_events(memcg_max, "/work", "oom", local=True)
    kills = memcg_events(memcg_max, "/work", "oom_kill", local=True)
    assert len(ooms) == 1 and len(kills) == 1
    # reclaim, the one retry after draining the stock, MAX_RECLAIM_RETRIES more, then OOM
    assert len([e for e in maxes if e["i"] < ooms[0]["i"]]) == 2 + MAX_RECLAIM_RETRIES
    assert ooms[0]["i"] < kills[0]["i"] < events(memcg_max, "sim:oom_kill")[0]["i"]
    s = summary(memcg_max)["memcgs"]["/work"]
    assert s["events"]["oom"] == 1 and s["events"]["oom_kill"] == 1 and s["events"]["max"] >= 18
    assert s["max"] == 64 * MiB_PAGES and s["usage"] == 8 * MiB_PAGES  # the helper's rss is left


def test_memcg_max_usage_stays_within_max_but_the_dying_task_force_charges(memcg_max):
    forced = events(memcg_max, "sim:memcg_force_charge")
    hog = pids_of(memcg_max, "hog")[0]
    # the victim's last charge bypassed the limit: it is dying (should_force_charge)
    assert forced and {(f["pid"], f["why"]) for f in forced} == {(hog, "dying")}
    assert forced[0]["i"] > events(memcg_max, "sim:oom_kill")[0]["i"]
    never_above_max_but_forced(memcg_max, "/work")


def test_memcg_max_console_report(memcg_max):
    text = "\n".join(console_lines(memcg_max.records, hz=memcg_max.hz))
    assert "hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0" in text
    assert "memory: usage 65536kB, limit 65536kB, failcnt " in text
    assert ",oom_memcg=/work,task_memcg=/work,task=hog," in text
    assert "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null)" in text
    assert "Memory cgroup out of memory: Killed process" in text
    lines = text.splitlines()
    invoked = next(i for i, x in enumerate(lines) if "invoked oom-killer" in x)
    assert "memory: usage" in lines[invoked + 1] and "swap: usage" in lines[invoked + 2]


# --- test_memcg_max with swap: swap first, kill only once swap.max is reached -------------


@pytest.fixture(scope="module")
def memcg_swap(simulate):
    return simulate("configs/memcg-swap.toml")


def test_memcg_swap_keeps_usage_under_max_and_swaps(memcg_swap):
    oom = memcg_events(memcg_swap, "/work", "oom", local=True)
    assert len(oom) == 1
    before = [s for s in samples(memcg_swap, "/work") if s["i"] < oom[0]["i"]]
    assert all(s["usage"] <= s["max"] for s in before)
    swap = [s["swap_usage"] for s in before]
    assert swap == sorted(swap) and swap[0] == 0  # swap usage only grows
    assert max(swap) > 16 * MiB_PAGES
    never_above_max_but_forced(memcg_swap, "/work")


def test_memcg_swap_no_kill_until_swap_max(memcg_swap):
    oom = memcg_events(memcg_swap, "/work", "oom", local=True)[0]
    kill = events(memcg_swap, "sim:oom_kill")[0]
    assert kill["pid"] == pids_of(memcg_swap, "hog")[0] and kill["i"] > oom["i"]
    # the report at the kill: memory at max and swap at swap.max
    info = events(memcg_swap, "sim:memcg_oom_meminfo")[0]
    assert info["usage_kb"] == info["limit_kb"] == 32 * 1024
    assert info["swap_usage_kb"] == info["swap_limit_kb"] == 32 * 1024
    # totalpages counts the swap the memcg may use
    assert events(memcg_swap, "sim:oom_header")[0]["totalpages"] == 64 * MiB_PAGES
    assert outcomes(memcg_swap)["outside"] == {"running"}


# --- test_memcg_oom_events: the counters, local and hierarchical -------------------------------


OOM_EVENTS = """
[machine]
cpus = 2
memory = "1GiB"
swap = "1GiB"
[run]
duration = "2s"
stop_when_idle = false
meminfo_interval = "100ms"
[[memcgs]]
path = "/parent"
[[memcgs]]
path = "/parent/child"
max = "32MiB"
swap_max = "0"
[[tasks]]
name = "hog"
memcg = "/parent/child"
program = [{ op = "alloc", size = "100MiB" }]
"""


def test_memcg_oom_events(simulate):
    r = simulate(parse_config(OOM_EVENTS))
    s = summary(r)["memcgs"]
    child, parent = s["/parent/child"], s["/parent"]
    assert child["events"]["oom"] == 1 and child["events"]["oom_kill"] == 1
    assert child["events"]["max"] > 0 and child["events"] == child["events_local"]
    # memory.events is hierarchical: the parent sees the child's; its local file stays empty
    assert parent["events"] == child["events"]
    assert set(parent["events_local"].values()) == {0}
    # swap.max = 0: nothing of the child went to swap although the machine has swap
    assert child["swap_max"] == 0 and all(x["swap_usage"] == 0 for x in samples(r, "/parent/child"))
    # no process is left in the child
    assert outcomes(r)["hog"] == {"killed"} and child["usage"] == 0


# --- test_memcg_high_sync: memory.high throttles, never kills -----------------------------------


@pytest.fixture(scope="module")
def memcg_high(simulate):
    return simulate("configs/memcg-high.toml")


def test_memcg_high_throttles_and_never_kills(memcg_high):
    s = summary(memcg_high)["memcgs"]["/work"]
    assert s["events"]["high"] > 0
    assert s["events"]["max"] == 0 and s["events"]["oom"] == 0 and s["events"]["oom_kill"] == 0
    assert not events(memcg_high, "sim:oom_kill") and not events(memcg_high, "sim:out_of_memory_enter")
    assert outcomes(memcg_high)["hog"] == {"running"}
    # usage went past high (it is not a limit) but nowhere near max
    assert s["high"] < s["peak_usage"] < s["max"]


def test_memcg_high_penalty_grows_and_is_capped(memcg_high):
    hz = memcg_high.hz
    hog = pids_of(memcg_high, "hog")[0]
    throttles = where(events(memcg_high, "sim:throttle"), why="memcg_high")
    assert len(throttles) >= 5 and {t["pid"] for t in throttles} == {hog}
    penalties = [t["jiffies"] for t in throttles]
    assert penalties == sorted(penalties)  # quadratic in the growing overage
    assert all(hz // 100 < p <= 2 * hz for p in penalties)
    # each penalty is slept off: the next allocation comes after it
    steps = where(events(memcg_high, "sim:memcg_event"), path="/work", name="high")
    assert steps and steps[0]["i"] < throttles[0]["i"]


# --- memory.oom.group -------------------------------------------------------------------------------


OOM_GROUP_LEAF = """
[machine]
cpus = 2
memory = "1GiB"
[run]
duration = "2s"
stop_when_idle = false
[[memcgs]]
path = "/work"
max = "96MiB"
[[memcgs]]
path = "/work/leaf"
max = "48MiB"
oom_group = true
[[tasks]]
name = "bystander"
memcg = "/work"
rss = "8MiB"
program = [{ op = "sleep", time = "10s" }]
[[tasks]]
name = "member"
count = 2
memcg = "/work/leaf"
rss = "4MiB"
program = [{ op = "sleep", time = "10s" }]
[[tasks]]
name = "hog"
memcg = "/work/leaf"
start = "100ms"
program = [{ op = "alloc", size = "100MiB" }]
[[tasks]]
name = "outside"
rss = "8MiB"
program = [{ op = "sleep", time = "10s" }]
"""


def test_memcg_oom_group_leaf_events(simulate):
    r = simulate(parse_config(OOM_GROUP_LEAF))
    hog = pids_of(r, "hog")[0]
    members = set(pids_of(r, "member"))
    kills = events(r, "sim:oom_kill")
    # the victim, then every task of the leaf -- the victim met again
    assert kills[0]["pid"] == hog
    assert sorted(k["pid"] for k in kills[1:]) == sorted(members | {hog})
    assert events(r, "sim:memcg_oom_group")[0]["path"] == "/work/leaf"
    assert outcomes(r) == {"init": {"running"}, "bystander": {"running"}, "member": {"killed"},
                           "hog": {"killed"}, "outside": {"running"}}
    s = summary(r)["memcgs"]
    # 5.10's memory.events has no oom_group_kill line (it came in 5.17)
    assert s["/work/leaf"]["events_local"]["oom_group_kill"] == 0
    assert s["/work/leaf"]["events_local"]["oom_kill"] == len(members) + 2
    assert s["/work"]["events"]["oom_group_kill"] == 0 and s["/work"]["events_local"]["oom_kill"] == 0
    text = "\n".join(console_lines(r.records, hz=r.hz))
    assert "Tasks in /work/leaf are going to be killed due to memory.oom.group set" in text
    assert text.count("oom-kill:constraint=") == 1  # one report, many kills


OOM_GROUP_PARENT = """
[machine]
cpus = 2
memory = "1GiB"
[run]
duration = "2s"
stop_when_idle = false
[[memcgs]]
path = "/work"
max = "64MiB"
oom_group = true
[[memcgs]]
path = "/work/a"
[[memcgs]]
path = "/work/b"
[[tasks]]
name = "sleeper_a"
memcg = "/work/a"
rss = "4MiB"
program = [{ op = "sleep", time = "10s" }]
[[tasks]]
name = "sleeper_b"
count = 2
memcg = "/work/b"
rss = "4MiB"
program = [{ op = "sleep", time = "10s" }]
[[tasks]]
name = "hog"
memcg = "/work/a"
start = "100ms"
program = [{ op = "alloc", size = "100MiB" }]
[[tasks]]
name = "outside"
rss = "8MiB"
program = [{ op = "sleep", time = "10s" }]
"""


def test_memcg_oom_group_parent_events(simulate):
    r = simulate(parse_config(OOM_GROUP_PARENT))
    kill = events(r, "sim:oom_kill")[0]
    assert (kill["comm"], kill["oom_memcg"], kill["task_memcg"]) == ("hog", "/work", "/work/a")
    # the highest memcg with oom.group up to the OOM domain: every task under /work dies
    assert events(r, "sim:memcg_oom_group")[0]["path"] == "/work"
    assert outcomes(r) == {"init": {"running"}, "sleeper_a": {"killed"}, "sleeper_b": {"killed"},
                           "hog": {"killed"}, "outside": {"running"}}
    s = summary(r)["memcgs"]
    assert s["/work"]["events_local"]["oom_group_kill"] == 0  # 5.17+ only
    assert s["/work/b"]["events_local"]["oom_kill"] == 2 and s["/work/a"]["events_local"]["oom_kill"] == 3


OOM_GROUP_SCORE = """
[machine]
cpus = 2
memory = "1GiB"
[run]
duration = "2s"
stop_when_idle = false
[[memcgs]]
path = "/work"
max = "48MiB"
oom_group = true
[[tasks]]
name = "safe"
memcg = "/work"
rss = "1MiB"
oom_score_adj = -1000
program = [{ op = "sleep", time = "10s" }]
[[tasks]]
name = "other"
memcg = "/work"
rss = "1MiB"
program = [{ op = "sleep", time = "10s" }]
[[tasks]]
name = "hog"
memcg = "/work"
start = "100ms"
program = [{ op = "alloc", size = "100MiB" }]
"""


def test_memcg_oom_group_score_events(simulate):
    r = simulate(parse_config(OOM_GROUP_SCORE))
    safe = pids_of(r, "safe")[0]
    # the victim, the other task and the victim again: 3, as the selftest expects
    assert summary(r)["memcgs"]["/work"]["events"]["oom_kill"] == 3
    assert safe not in {k["pid"] for k in events(r, "sim:oom_kill")}
    assert not where(events(r, "oom:mark_victim"), pid=safe)
    assert outcomes(r) == {"init": {"running"}, "safe": {"running"}, "other": {"killed"}, "hog": {"killed"}}


# --- test_memcg_min / test_memcg_low: protection from siblings' reclaim --------------------------


@pytest.fixture(scope="module")
def memcg_low(simulate):
    return simulate("configs/memcg-low.toml")


def _after_step(result, comm: str) -> int:
    """The index of the exit of the first ``comm`` process."""
    pid = pids_of(result, comm)[0]
    return where(events(result, "sched:sched_process_exit"), pid=pid)[0]["i"]


def _usage_at(result, i: int) -> dict[str, float]:
    """Usage (MiB) of B and its children in the last samples before event ``i``."""
    last = {s["path"]: s["usage"] / MiB_PAGES for s in events(result, "sim:memcg_usage") if s["i"] < i}
    return {p: last[p] for p in ("/A/B", "/A/B/C", "/A/B/D", "/A/B/E")}


def test_memcg_low_protects_page_cache_in_proportion(memcg_low):
    done = _after_step(memcg_low, "pressure")
    u = _usage_at(memcg_low, done)
    # B's 50MiB of protection shared by C and D by claim and use; E has none and loses all
    assert 48 <= u["/A/B"] <= 53
    assert u["/A/B/E"] < 1
    assert 25 <= u["/A/B/C"] <= 36 and 14 <= u["/A/B/D"] <= 24 and u["/A/B/C"] > u["/A/B/D"]
    # no low protection was breached for that
    lows = memcg_events(memcg_low, "/A/B/C", "low") + memcg_events(memcg_low, "/A/B/D", "low")
    assert lows and all(e["i"] > done for e in lows)


def test_memcg_low_is_breached_rather_than_oom(memcg_low):
    s = summary(memcg_low)["memcgs"]
    # asking for more than /A has unprotected: low events on the protected, none on E
    assert s["/A/B/C"]["events_local"]["low"] > 0 and s["/A/B/D"]["events_local"]["low"] > 0
    assert s["/A/B/E"]["events"]["low"] == 0
    assert all(v["events"]["oom"] == 0 and v["events"]["oom_kill"] == 0 for v in s.values())
    assert outcomes(memcg_low)["crusher"] == {"exited"} and not events(memcg_low, "sim:oom_kill")
    u = _usage_at(memcg_low, _after_step(memcg_low, "crusher"))
    assert u["/A/B"] < 45  # the crusher got pages from under the low protection


MIN = """
[machine]
cpus = 2
memory = "2GiB"
swap = "0"
[run]
duration = "5s"
stop_when_idle = false
meminfo_interval = "100ms"
[[memcgs]]
path = "/A"
max = "200MiB"
min = "50MiB"
[[memcgs]]
path = "/A/B"
min = "50MiB"
[[memcgs]]
path = "/A/B/C"
min = "75MiB"
[[memcgs]]
path = "/A/B/D"
min = "25MiB"
[[memcgs]]
path = "/A/B/E"
[[memcgs]]
path = "/A/B/F"
min = "500MiB"
[[memcgs]]
path = "/A/G"
[[tasks]]
name = "cache_c"
memcg = "/A/B/C"
program = [{ op = "touch_file", size = "50MiB", mapped = false }, { op = "sleep", time = "60s" }]
[[tasks]]
name = "cache_d"
memcg = "/A/B/D"
program = [{ op = "touch_file", size = "50MiB", mapped = false }, { op = "sleep", time = "60s" }]
[[tasks]]
name = "cache_e"
memcg = "/A/B/E"
program = [{ op = "touch_file", size = "50MiB", mapped = false }, { op = "sleep", time = "60s" }]
[[tasks]]
name = "pressure"
memcg = "/A/G"
start = "1s"
program = [{ op = "alloc", size = "148MiB" }, { op = "sleep", time = "1s" }]
[[tasks]]
name = "crusher"
memcg = "/A/G"
start = "3s"
program = [{ op = "alloc", size = "170MiB" }, { op = "sleep", time = "1s" }]
"""


def test_memcg_min(simulate):
    r = simulate(parse_config(MIN))
    u = _usage_at(r, _after_step(r, "pressure"))
    assert 48 <= u["/A/B"] <= 53 and u["/A/B/E"] < 1
    assert 25 <= u["/A/B/C"] <= 36 and 14 <= u["/A/B/D"] <= 24
    # min is hard: asking for more than is unprotected ends in an OOM kill, not a breach
    kills = events(r, "sim:oom_kill")
    assert [(k["comm"], k["oom_memcg"], k["task_memcg"]) for k in kills] == [("crusher", "/A", "/A/G")]
    s = summary(r)["memcgs"]
    assert all(v["events"]["low"] == 0 for v in s.values())
    after = _usage_at(r, _after_step(r, "crusher"))
    assert after["/A/B"] >= 48 and after["/A/B/C"] >= u["/A/B/C"] - 2 and after["/A/B/D"] >= u["/A/B/D"] - 2
    assert outcomes(r)["cache_c"] == {"running"} and outcomes(r)["cache_e"] == {"running"}


# --- a global OOM: memory.events and memory.oom.group apply to it too -----------------------------


GLOBAL = """
[machine]
cpus = 2
memory = "512MiB"
swap = "64MiB"
[run]
duration = "6s"
stop_when_idle = false
meminfo_interval = "100ms"
[[memcgs]]
path = "/web"
oom_group = true
[[memcgs]]
path = "/cache"
[[tasks]]
name = "cache"
memcg = "/cache"
program = [{ op = "touch_file", size = "128MiB", mapped = false }, { op = "touch_file", size = "32MiB" },
           { op = "sleep", time = "60s" }]
[[tasks]]
name = "web"
memcg = "/web"
rss = "16MiB"
program = [{ op = "sleep", time = "60s" }]
[[tasks]]
name = "leak"
memcg = "/web"
start = "1s"
program = [{ op = "repeat", steps = [{ op = "alloc", size = "16MiB", rate = "256MiB/s" }] }]
"""


def test_global_oom_counts_in_the_memcg_and_kills_its_oom_group(simulate):
    r = simulate(parse_config(GLOBAL))
    kills = events(r, "sim:oom_kill")
    assert kills[0]["comm"] == "leak" and kills[0]["message"] == "Out of memory"
    assert (kills[0]["constraint"], kills[0]["oom_memcg"], kills[0]["task_memcg"]) == ("CONSTRAINT_NONE", "", "/web")
    # the OOM domain is the root: the victim's highest oom.group memcg below it goes
    assert events(r, "sim:memcg_oom_group")[0]["path"] == "/web"
    assert outcomes(r) == {"init": {"running"}, "cache": {"running"}, "web": {"killed"}, "leak": {"killed"}}
    ev = summary(r)["memcgs"]["/web"]["events"]
    # oom_kill counts kills by any OOM killer; max and oom belong to the memcg's own limit
    # (no oom_group_kill counter in 5.10: it came in 5.17)
    assert ev["oom_kill"] == 3 and ev["oom_group_kill"] == 0 and ev["oom"] == 0 and ev["max"] == 0
    # global reclaim took page cache charged to /cache (and uncharged it) before the kill
    use = [x["usage"] for x in samples(r, "/cache") if x["i"] < kills[0]["i"]]
    assert max(use) == 160 * MiB_PAGES and use[-1] < 96 * MiB_PAGES
    text = "\n".join(console_lines(r.records, hz=r.hz))
    assert ",global_oom,task_memcg=/web,task=leak," in text


# --- 5.10: nothing killable in the memcg -> the charge goes over the limit ---------------------


UNKILLABLE = """
[machine]
cpus = 2
memory = "1GiB"
[run]
duration = "2s"
stop_when_idle = false
[[memcgs]]
path = "/work"
max = "16MiB"
[[tasks]]
name = "pinned"
memcg = "/work"
oom_score_adj = -1000
program = [{ op = "alloc", size = "16640KiB" }, { op = "sleep", time = "10s" }]
"""


def test_memcg_nothing_killable_force_charges_in_5_10(simulate):
    # 64 pages past memory.max: each fault's charge reclaims, goes OOM, finds nothing
    # killable and is forced -- one page at a time, as try_charge charges one page per fault
    r = simulate(parse_config(UNKILLABLE))
    assert not events(r, "sim:oom_kill") and r.reason != "panic"
    assert events(r, "sim:no_killable")  # "Out of memory and no killable processes..."
    returns = events(r, "sim:out_of_memory_return")
    assert returns and {x["reason"] for x in returns} == {"no_killable"}
    forced = events(r, "sim:memcg_force_charge")
    assert forced and {f["why"] for f in forced} == {"oom_failed"}
    s = summary(r)["memcgs"]["/work"]
    assert s["usage"] == 16 * MiB_PAGES + 64 > s["max"] and s["force_charged"] == 64
    assert [f["pages"] for f in forced] == [1] * 64
    assert s["events"]["oom"] == len(forced) and s["events"]["oom_kill"] == 0
    assert outcomes(r)["pinned"] == {"running"}


# --- oom_lock: a memcg OOM sleeps on it while another OOM holds it -----------------------------


RACE = """
[machine]
cpus = 2
memory = "1GiB"
[run]
duration = "1s"
stop_when_idle = false
[[memcgs]]
path = "/x"
max = "32MiB"
[[memcgs]]
path = "/y"
max = "32MiB"
[[tasks]]
name = "hog_x"
memcg = "/x"
program = [{ op = "alloc", size = "64MiB" }]
[[tasks]]
name = "hog_y"
memcg = "/y"
program = [{ op = "alloc", size = "64MiB" }]
"""


def test_memcg_oom_waits_for_oom_lock(simulate):
    r = simulate(parse_config(RACE))
    contended = events(r, "sim:oom_lock_contended")
    assert len(contended) == 1
    waiter = contended[0]["pid"]
    released = events(r, "sim:oom_lock_released")
    acquired = where(events(r, "sim:oom_lock_acquired"), pid=waiter)
    # it slept on the lock (no trylock loop) and took it right after the holder let go
    assert acquired[0]["i"] > released[0]["i"] and acquired[0]["t"] == released[0]["t"]
    assert r.machine.sched.point_hits["memcg.oom_lock"] == 1
    assert sorted(k["comm"] for k in events(r, "sim:oom_kill")) == ["hog_x", "hog_y"]
    assert {k["oom_memcg"] for k in events(r, "sim:oom_kill")} == {"/x", "/y"}


# --- config errors name the key ---------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ('[[memcgs]]\npath = "/a/b"', "x.toml: memcgs[0].path: parent '/a' must be declared before it"),
    ('[[memcgs]]\npath = "/a"\nmax = -1', "x.toml: memcgs[0].max: negative size"),
    ('[[memcgs]]\npath = "/a"\nlow = "-1MiB"', "x.toml: memcgs[0].low: negative size"),
    ('[[tasks]]\nname = "x"\nmemcg = "/q"', "x.toml: tasks[0].memcg: unknown memcg '/q'"),
    ('[[memcgs]]\npath = "a"',
     'x.toml: memcgs[0].path: expected a cgroup path such as "/a" or "/a/b" (the root "/" is implicit)'),
    ('[[memcgs]]\npath = "/a"\n[[memcgs]]\npath = "/a"', "x.toml: memcgs[1].path: duplicate memcg '/a'"),
    ('[[memcgs]]\npath = "/a"\noom_group = 1', "x.toml: memcgs[0].oom_group: expected true or false"),
    ('[[memcgs]]\npath = "/a"\nmax = "1MiB"\n[[tasks]]\nname = "x"\nrss = "2MiB"\nmemcg = "/a"',
     "x.toml: memcgs[0].max: smaller than the rss its tasks hold from boot (2MiB)"),
])
def test_memcg_config_errors_name_the_key(text, message):
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "x.toml")
    assert str(exc.value) == message


def test_memcg_config_defaults():
    cfg = parse_config('[[memcgs]]\npath = "/a"\n[[tasks]]\nname = "x"')
    c = cfg.memcgs[0]
    assert (c.max, c.high, c.swap_max, c.min, c.low, c.oom_group) == ("max", "max", "max", 0, 0, False)
    assert cfg.tasks[0].memcg == "/"


def test_memcg_nothing_killable_fails_the_charge_in_6_12(simulate):
    """5.16+: OOM_FAILED is -ENOMEM; the fault returns VM_FAULT_OOM and, with no global OOM
    from the #PF handler, the task keeps re-faulting while usage stays within memory.max."""
    r = simulate(parse_config(UNKILLABLE.replace("[machine]", '[kernel]\nprofile = "linux-6.12"\n[machine]')))
    assert not events(r, "sim:oom_kill") and r.reason != "panic"
    assert not events(r, "sim:memcg_force_charge")
    failed = events(r, "sim:memcg_charge_failed")
    assert len(failed) > 1 and {f["why"] for f in failed} == {"oom_failed"}
    s = summary(r)["memcgs"]["/work"]
    assert s["usage"] <= s["max"] and s["force_charged"] == 0
    # no global OOM from the fault handler: every out_of_memory call was the memcg's own
    assert all(e["gfp_flags"] != "0x0()" for e in events(r, "sim:out_of_memory_enter"))
    assert outcomes(r)["pinned"] == {"running"}
