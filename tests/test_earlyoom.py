"""earlyoom (policies/earlyoom.py): its documented triggers and choices, read from events.

The shipped config ``configs/userspace-earlyoom.toml``: 1 GiB without swap, a postgres
(256 MiB), two nginx (32 MiB each) and a leaker growing at 64 MiB/s from t = 1 s.
"""

from __future__ import annotations

import re

import pytest

from helpers import events, first, pids_of
from oomactors.config import load_config
from oomactors.report import summarize
from oomactors.units import parse_duration
from oomactors.userspace import Meminfo
from policies.earlyoom import Earlyoom
from policies.registry import ParamProblem, load_policy, validate_params

CONFIG = "configs/userspace-earlyoom.toml"


def _cfg(**leaker):
    from conftest import ROOT
    cfg = load_config(ROOT / CONFIG)
    tasks = tuple(t.model_copy(update=leaker) if t.name == "leaker" else t for t in cfg.tasks)
    return cfg.model_copy(update={"tasks": tasks})


def _mem_pct(reason: str) -> float:
    return float(re.search(r"mem ([\d.]+)%", reason).group(1))


def test_sigterm_ignored_then_sigkill(simulate):
    """Both limits reached (no swap: free swap is 0 %) -> SIGTERM to the highest oom_score;
    the leaker ignores it and keeps growing; earlyoom waits for it and escalates to SIGKILL
    at the SIGKILL limit (5 %), then releases its memory.  The kernel never OOMs."""
    r = simulate(CONFIG)
    leaker = pids_of(r, "leaker")[0]
    kills = events(r, "userspace:kill")
    assert [(k["pid"], k["sig"], k["result"]) for k in kills] == [(leaker, 15, 0), (leaker, 9, 0)]
    term, kill = kills
    assert term["daemon"] == "earlyoom"
    assert 9.0 < _mem_pct(term["reason"]) <= 10.0
    # SIGTERM was generated but ignored (SIG_IGN: result 1), SIGKILL delivered (0)
    sigs = [(s["sig"], s["result"]) for s in events(r, "signal:signal_generate") if s["pid"] == leaker]
    assert sigs == [(15, 1), (9, 0)]
    # escalation within the 10 s kill_wait, at the SIGKILL limit
    assert "escalating to SIGKILL" in kill["reason"]
    assert _mem_pct(kill["reason"]) <= 5.0
    assert 0 < kill["t"] - term["t"] < 10 * r.hz
    # process_mrelease: refused for the live SIGTERM target, done for the SIGKILLed one
    rel = events(r, "userspace:mrelease")
    assert [(e["result"], e["pages"] > 0) for e in rel] == [(-22, False), (0, True)]
    ex = first(r, "sched:sched_process_exit", pid=leaker)
    assert ex["reason"] == "killed" and ex["t"] >= kill["t"]
    assert not events(r, "sim:oom_kill", "sim:out_of_memory_enter")
    # the daemon is a process of its own, as its unit starts it
    d = first(r, "sim:task_new", comm="earlyoom")
    assert (d["uid"], d["oom_score_adj"], d["kthread"]) == (61184, -100, 0)
    assert d["pid"] > leaker


def test_sigterm_handler_exits_after_cleanup(simulate):
    """A victim with a SIGTERM handler cleans up for 300 ms and exits by itself; earlyoom
    waits for it (memory stays above the SIGKILL limit) and sends nothing else."""
    r = simulate(_cfg(on_sigterm="exit", sigterm_exit_delay=parse_duration("300ms")))
    leaker = pids_of(r, "leaker")[0]
    kills = events(r, "userspace:kill")
    assert [(k["pid"], k["sig"]) for k in kills] == [(leaker, 15)]
    ex = first(r, "sched:sched_process_exit", pid=leaker)
    assert ex["reason"] == "sigterm"
    # the handler runs at the next return to user space, cleans up 300 ms (75 jiffies),
    # then exit() unmaps the leaker's memory (a few jiffies of CPU)
    assert r.hz * 300 // 1000 <= ex["t"] - kills[0]["t"] < r.hz * 400 // 1000
    outcome = {t["pid"]: t["outcome"] for t in summarize(r.records, seed=r.seed, hz=r.hz)["tasks"]}
    assert outcome[leaker] == "exited"
    assert not events(r, "sim:oom_kill")


def test_sigterm_default_action_kills_at_once(simulate):
    """Without a handler, SIGTERM's default action kills like SIGKILL: one signal."""
    r = simulate(_cfg(on_sigterm="exit"))
    leaker = pids_of(r, "leaker")[0]
    assert [(k["pid"], k["sig"]) for k in events(r, "userspace:kill")] == [(leaker, 15)]
    assert first(r, "sched:sched_process_exit", pid=leaker)["reason"] == "killed"
    assert [e["result"] for e in events(r, "userspace:mrelease")] == [0]


def _victims(r):
    comm = {e["pid"]: e["comm"] for e in events(r, "sim:task_new")}
    return [comm[k["pid"]] for k in events(r, "userspace:kill")]


@pytest.mark.parametrize("params, victims", [
    # by default: the highest oom_score, the leaker (5.9+ scale: ~1048 vs postgres' 833)
    ({}, ["leaker"]),
    # --prefer adds 300 to a name's oom_score: postgres (1133) beats the leaker
    ({"prefer": "^postgres$"}, ["postgres", "leaker"]),
    # --avoid subtracts 300: postgres first; once it is gone the leaker (748) again beats nginx
    ({"avoid": "leak"}, ["postgres", "leaker"]),
    # --ignore never picks it: postgres, then both nginx; then nobody is left to pick, and
    # the leaker lives on (memory low, earlyoom idling: "Could not find a process to kill")
    ({"ignore": "leak"}, ["postgres", "nginx", "nginx"]),
])
def test_prefer_avoid_ignore_change_the_choice(simulate, params, victims):
    r = simulate(_cfg(on_sigterm="exit"), policy=load_policy("earlyoom", params))
    assert _victims(r) == victims
    assert not events(r, "sim:oom_kill")
    leaker = pids_of(r, "leaker")[0]
    survived = first(r, "sched:sched_process_exit", pid=leaker) is None
    assert survived == ("ignore" in params)


def test_thresholds_decide_when(simulate):
    """-m 20 sends SIGTERM with more memory left, earlier; -m 20,20 sends SIGKILL at once."""
    base = simulate(_cfg(on_sigterm="exit"))
    m20 = simulate(_cfg(on_sigterm="exit"), policy=load_policy("earlyoom", {"mem_percent": 20}))
    t10, t20 = events(base, "userspace:kill")[0], events(m20, "userspace:kill")[0]
    assert 10.0 < _mem_pct(t20["reason"]) <= 20.0
    assert t20["t"] < t10["t"]
    both = simulate(_cfg(on_sigterm="ignore"),
                    policy=load_policy("earlyoom", {"mem_percent": 20, "mem_kill_percent": 20}))
    assert [k["sig"] for k in events(both, "userspace:kill")] == [9]
    # -s 100 ignores swap; with swap_percent 0 and no swap (0 % free) earlyoom still acts
    s0 = simulate(_cfg(on_sigterm="exit"), policy=load_policy("earlyoom", {"swap_percent": 0}))
    assert _victims(s0) == ["leaker"]


def _mi(avail: int, anon: int, swap_total: int = 0, swap_free: int = 0) -> Meminfo:
    return Meminfo(MemTotal=avail + anon, MemFree=0, MemAvailable=avail, Cached=0, AnonPages=anon,
                   Shmem=0, SReclaimable=0, SUnreclaim=0, PageTables=0, Dirty=0, Writeback=0,
                   SwapTotal=swap_total, SwapFree=swap_free, Committed_AS=0, CommitLimit=0)


def test_adaptive_poll_interval_by_hand():
    """sleep_time_ms: headroom above the SIGTERM limits / (6000 MiB/s, 800 MiB/s), in
    100..1000 ms."""
    eo = Earlyoom(validate_params("earlyoom", {}))
    # 50 % of 1e6 kB user memory available: (50 - 10) % = 400000 kB / 6000 = 66 -> 100 ms
    assert eo.sleep_time_ms(_mi(500_000, 500_000)) == 100
    # 90 % of 4e6 kB: 3.2e6 kB / 6000 = 533 ms
    assert eo.sleep_time_ms(_mi(3_600_000, 400_000)) == 533
    # plus 50 % of 1e6 kB swap free: (50 - 10) % = 400000 / 800 = 500 -> 1033 -> 1000 ms
    assert eo.sleep_time_ms(_mi(3_600_000, 400_000, 1_000_000, 500_000)) == 1000
    # at or below the limits: the minimum
    assert eo.sleep_time_ms(_mi(50_000, 950_000)) == 100
    # MemAvailablePercent is of MemAvailable + AnonPages (user memory), not MemTotal
    mem, swap, total = Earlyoom.percents(_mi(100_000, 900_000))
    assert (mem, swap, total) == (10.0, 0.0, 1_000_000)
    assert eo.lowmem_sig(_mi(100_000, 900_000)) == 15
    assert eo.lowmem_sig(_mi(50_000, 950_000)) == 9
    assert eo.lowmem_sig(_mi(100_001, 899_999)) == 0


def test_params_are_validated():
    with pytest.raises(ParamProblem, match="SIGKILL limit 8.0 cannot be greater"):
        validate_params("earlyoom", {"mem_percent": 5, "mem_kill_percent": 8})
    with pytest.raises(ParamProblem, match="policy.prefer: could not compile regexp"):
        validate_params("earlyoom", {"prefer": "("})
    with pytest.raises(ParamProblem, match="policy.bogus: unknown key"):
        validate_params("earlyoom", {"bogus": 1})


def test_size_limits_alone_are_not_capped_by_the_default_percentages():
    """earlyoom's main.c: -M alone sets the limit; -m and -M together, the lower wins;
    neither, 10 % (SIGKILL at half)."""
    from types import SimpleNamespace
    from policies.earlyoom import Earlyoom, EarlyoomParams

    mi = SimpleNamespace(MemTotal=2 * 1024 * 1024, SwapTotal=0)   # kB: 2 GiB, no swap

    def limits(**kw):
        return Earlyoom(EarlyoomParams(**kw))._limits(mi)[:2]

    assert limits() == (10.0, 5.0)
    assert limits(mem_size=1 << 30) == (50.0, 25.0)
    assert limits(mem_size=1 << 30, mem_percent=20) == (20.0, 10.0)
    assert limits(mem_percent=20) == (20.0, 10.0)
