"""Meta's oomd as a userspace OOM killer (policies/oomd.py): each detector's trigger and each
action's choice on purpose-built configs, read from the ``userspace:kill`` events.

``configs/userspace-oomd.toml``: three services in /workload; "leaker" grows while "db"
is the largest.  The pressure detector (full avg10 of "/" above 10% for 3s) fires at
t=10s; ``kill_by_memory_size_or_growth`` kills the fast grower with size_threshold = 60 and
the largest cgroup with oomd's default size_threshold = 50.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from helpers import events, pids_of, where
from oomactors.config import Config, parse_config
from oomactors.errors import ConfigError
from policies.oomd import KillBySizeOrGrowth, KillBySizeOrGrowthArgs, OomdParams, glob_cgroups, split_patterns

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = tomllib.loads((ROOT / "configs/userspace-oomd.toml").read_text())


def variant(base: dict | None = None, *, action: dict | None = None, detector: dict | None = None,
            rulesets: list | None = None, **sections: dict) -> Config:
    """The shipped config (or ``base``) with the first ruleset's action or detector patched."""
    data = copy.deepcopy(SHIPPED if base is None else base)
    rs = data["policy"]["rulesets"]
    if action:
        rs[0]["actions"][0].update(action)
    if detector:
        rs[0]["detector_groups"][0]["detectors"][0].update(detector)
    if rulesets is not None:
        data["policy"]["rulesets"] = rulesets
    for name, patch in sections.items():
        data.setdefault(name, {}).update(patch)
    return Config.model_validate(data)


def kills(result: Any) -> list[dict]:
    """The first userspace:kill of each victim (oomd signals a cgroup's processes again
    while they are still exiting), with the time in seconds."""
    seen, out = set(), []
    for ev in events(result, "userspace:kill"):
        if ev["pid"] not in seen:
            seen.add(ev["pid"])
            out.append({**ev, "s": ev["t"] / result.hz})
    return out


def exited(result: Any, comm: str) -> list[dict]:
    return where(events(result, "sched:sched_process_exit"), comm=comm)


@pytest.fixture(scope="module")
def shipped(simulate):
    return simulate("configs/userspace-oomd.toml")


@pytest.fixture(scope="module")
def by_size(simulate):
    return simulate(variant(action={"size_threshold": 50}, run={"duration": "11s"}))


def test_growth_kills_the_fast_grower_not_the_largest(shipped):
    k = kills(shipped)
    assert [(e["comm"], e["s"]) for e in k] == [("leaker", 10.0)]
    reason = k[0]["reason"]
    assert reason.startswith("ruleset=memory pressure protection detectorgroup=system is under a lot of "
                             "pressure kill_by_memory_size_or_growth: picked /workload/leaker (growth ")
    growth = float(re.search(r"growth (\d+\.\d+) >= 1.25", reason)[1])
    assert growth >= 1.25
    # every process of the cgroup got SIGKILL, the leaker is gone, the others live on
    assert {e["pid"] for e in events(shipped, "userspace:kill")} == set(pids_of(shipped, "leaker"))
    assert all(e["sig"] == 9 and e["result"] == 0 for e in events(shipped, "userspace:kill"))
    assert [e["reason"] for e in exited(shipped, "leaker")] == ["killed"]
    assert not exited(shipped, "db") and not exited(shipped, "cache")
    assert not events(shipped, "sim:oom_kill")  # the kernel's OOM killer never had to run


def test_size_threshold_kills_the_largest_first(by_size):
    # db's 450MiB of tmpfs is swap-backed: under this pressure reclaim swaps it out, and by
    # the decision the leaker is the largest sibling (picked by size, not by growth)
    k = kills(by_size)
    assert [(e["comm"], e["s"]) for e in k] == [("leaker", 10.0)]
    m = re.search(r"picked /workload/leaker \(size (\d+)MB >= 50% of siblings' (\d+)MB\)", k[0]["reason"])
    assert m is not None, k[0]["reason"]
    # over the threshold of the default, under the 60% the shipped config uses
    assert 0.5 <= int(m[1]) / int(m[2]) < 0.6
    assert [e["reason"] for e in exited(by_size, "leaker")] == ["killed"]
    assert not exited(by_size, "db")


def test_pressure_above_waits_for_its_duration(simulate, shipped):
    """The detector fires once the pressure has been above the threshold on every tick for
    `duration`: two more seconds of duration, two seconds later; the rest of the run is the
    same until then."""
    later = simulate(variant(detector={"duration": "5s"}, run={"duration": "13s"}))
    first, then = kills(shipped)[0]["s"], kills(later)[0]["s"]
    assert then - first == 2.0
    # a threshold the pressure never reaches never fires (the swap ruleset takes over later)
    never = simulate(variant(detector={"threshold": 95}, run={"duration": "13s"}))
    assert not [e for e in kills(never) if e["reason"].startswith("ruleset=memory pressure protection")]


def test_a_group_needs_all_its_detectors_a_ruleset_any_group(simulate):
    pressure = {"plugin": "pressure_above", "cgroup": "/", "threshold": 10, "duration": "3s"}
    too_big = {"plugin": "memory_above", "cgroup": "workload/cache", "threshold": "1GiB"}
    action = [{"plugin": "kill_by_memory_size_or_growth", "cgroup": "workload/*", "size_threshold": 60,
               "growing_size_percentile": 50}]
    both = {"name": "pressure and a huge cache", "detectors": [pressure, too_big]}
    alone = {"name": "pressure alone", "detectors": [pressure]}
    short = {"duration": "11s"}
    only_and = simulate(variant(rulesets=[{"name": "and", "detector_groups": [both], "actions": action}],
                                run=short))
    assert not kills(only_and)
    either = simulate(variant(rulesets=[{"name": "or", "detector_groups": [both, alone], "actions": action}],
                              run=short))
    k = kills(either)
    assert [(e["comm"], e["s"]) for e in k] == [("leaker", 10.0)]
    assert "detectorgroup=pressure alone " in k[0]["reason"]


def test_memory_above_percent_of_memtotal(simulate):
    """memory_above with a percentage of MemTotal on the growing cgroup alone: fires as soon
    as the leaker's memory.current passes 30% of RAM, long before the pressure would."""
    rules = [{"name": "size guard", "actions": [{"plugin": "kill_by_memory_size_or_growth",
                                                 "cgroup": "workload/leaker"}],
              "detector_groups": [{"name": "leaker too big", "detectors": [
                  {"plugin": "memory_above", "cgroup": "workload/leaker", "threshold": "30%"}]}]}]
    r = simulate(variant(rulesets=rules, run={"duration": "8s"}))
    k = kills(r)
    assert [e["comm"] for e in k] == ["leaker"]
    # 30% of ~1GiB is ~300MiB: the leaker, 20MiB at t=1s growing 64MiB/s, gets there at ~5.5s
    assert 5.0 <= k[0]["s"] <= 7.0


SWAP = """
[machine]
cpus = 2
memory = "1GiB"
swap = "256MiB"
swap_bandwidth = "200MiB/s"
dma = "0"  # no ZONE_DMA (CONFIG_ZONE_DMA=n): tuned without it

[run]
duration = "10s"
stop_when_idle = false

[policy]
name = "oomd"

[[policy.rulesets]]
name = "low swap protection"
actions = [{ plugin = "kill_by_swap_usage", cgroup = "/*" }]

[[policy.rulesets.detector_groups]]
name = "swap is running low"
detectors = [{ plugin = "swap_free", threshold_pct = 40 }]

[[memcgs]]
path = "/batch"
[[memcgs]]
path = "/web"
[[memcgs]]
path = "/loader"

[[tasks]]
name = "batch"
memcg = "/batch"
rss = "300MiB"
program = [{ op = "sleep", time = "100s" }]

[[tasks]]
name = "web"
memcg = "/web"
rss = "250MiB"
program = [{ op = "sleep", time = "100s" }]

[[tasks]]
name = "loader"
memcg = "/loader"
rss = "10MiB"
start = "1s"
program = [{ op = "alloc", size = "600MiB", rate = "100MiB/s" }, { op = "sleep", time = "100s" }]
"""


def test_swap_free_kills_the_biggest_swap_user(simulate):
    """swap_free fires when free swap falls under 40% of the swap; kill_by_swap_usage picks
    the cgroup with the most memory.swap.current, not the one that is allocating."""
    r = simulate(parse_config(SWAP))
    k = kills(r)
    assert [e["comm"] for e in k] == ["batch"]
    t = k[0]["t"]
    swap_mb = int(re.search(r"picked /batch \(swap usage (\d+)MB\)", k[0]["reason"])[1])
    # by the kernel's own samples just before the kill, /batch had the most swap, and the
    # machine's free swap was under 40% of 256MiB
    samples = [e for e in events(r, "sim:memcg_usage") if e["t"] <= t]
    last = {e["path"]: e["swap_usage"] for e in samples}
    assert last["/batch"] == max(last[p] for p in ("/batch", "/web", "/loader")) > 0
    assert abs(swap_mb - last["/batch"] * 4096 // 2**20) <= 16
    assert not exited(r, "web") and not exited(r, "loader")
    # until then free swap was above the threshold on every meminfo sample
    before = [e for e in events(r, "sim:meminfo") if e["t"] < t - r.hz]
    assert before and all(e["swap_free"] * 100 >= 40 * 256 * 256 for e in before)


def test_post_action_delay_and_dry_run(simulate):
    base = tomllib.loads(SWAP)
    # dry: nothing is killed, the loader fills swap and RAM: the kernel's OOM killer acts
    dry = simulate(variant(base, action={"dry": True}))
    assert not events(dry, "userspace:kill")
    assert [(t, p) for t, p, _ in dry.machine.daemon.dry_kills][:1] == [(7 * dry.hz, "/batch")]
    # a second kill waits out post_action_delay even though swap stays low
    base["tasks"][2]["program"][0]["size"] = "900MiB"
    slow = simulate(variant(base, action={"post_action_delay": "2s"}, run={"duration": "14s"}))
    k = kills(slow)
    assert [e["comm"] for e in k][:2] == ["batch", "web"]
    assert k[1]["s"] - k[0]["s"] >= 2.0


def test_cgroup_patterns_follow_oomd():
    paths = ["/", "/workload", "/workload/a", "/workload/b", "/system.slice", "/system.slice/x.service"]
    assert split_patterns("workload/*,system.slice/*") == ["/workload/*", "/system.slice/*"]
    assert glob_cgroups(split_patterns("workload/*,system.slice/*"), paths) == [
        "/workload/a", "/workload/b", "/system.slice/x.service"]
    assert glob_cgroups(split_patterns("/"), paths) == ["/"]
    assert glob_cgroups(split_patterns("*"), paths) == ["/workload", "/system.slice"]


@pytest.mark.parametrize("patch, where_, problem", [
    ({"threshold": 512}, "detectors[0].memory_above.threshold", "a size such as"),
    ({"threshold": "512"}, "detectors[0].memory_above.threshold", "megabytes"),
    ({"threshold": None}, "detectors[0].memory_above", "needs threshold or threshold_anon"),
    ({"duration": "1500ms"}, "detectors[0].memory_above.duration", "whole seconds"),
])
def test_bad_parameters_are_one_line_errors(patch, where_, problem):
    det = {"plugin": "memory_above", "cgroup": "/", "threshold": "1GiB", **patch}
    det = {k: v for k, v in det.items() if v is not None}
    data = copy.deepcopy(SHIPPED)
    data["policy"]["rulesets"][0]["detector_groups"][0]["detectors"] = [det]
    with pytest.raises(ConfigError) as exc:
        parse_config(_to_toml(data), "x.toml")
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("x.toml: ")
    assert f"policy.rulesets[0].detector_groups[0].{where_}: " in msg and problem in msg, msg


def _to_toml(data: dict) -> str:
    """Just enough TOML writing for these configs: every section as an inline table."""
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {val(x)}' for k, x in v.items()) + " }"
        raise TypeError(v)
    return "\n".join(f"{k} = {val(v)}" for k, v in data.items()) + "\n"


def test_defaults_are_oomds():
    p = OomdParams()
    assert p.interval.ns == 10**9
    names = [r.name for r in p.rulesets]
    assert names == ["memory pressure protection", "low swap protection"]
    act = p.rulesets[0].actions[0]
    assert (act.size_threshold, act.min_growth_ratio, act.growing_size_percentile,
            act.post_action_delay.ns, act.dry) == (50, 1.25, 80, 15 * 10**9, False)


# --- kill_by_memory_size_or_growth's ranking, on made-up cgroup readings -------------------------------
class _Readings:
    """Just what KillBySizeOrGrowth.rank reads: memory.current, effective usage, growth."""

    def __init__(self, rows: dict[str, tuple[int, int, float]]) -> None:
        self.rows = rows  # path -> (current MiB, effective MiB, growth ratio)

    def current(self, p: str) -> int:
        return self.rows[p][0] << 20

    def effective(self, p: str) -> int:
        return self.rows[p][1] << 20

    def growth(self, p: str) -> float:
        return self.rows[p][2]


def _rank(rows: dict[str, tuple[int, int, float]], **args: Any) -> list[tuple[str, str]]:
    act = KillBySizeOrGrowthArgs.model_validate({"plugin": "kill_by_memory_size_or_growth",
                                                 "cgroup": "w/*", **args})
    return KillBySizeOrGrowth(act, None).rank(_Readings(rows), list(rows))


def test_size_phase_ranks_every_cgroup_over_the_threshold():
    """oomd's get_ranking_fn: every candidate whose memory.current is at least size_threshold %
    of the candidates' total is in the size phase, whatever its place by effective usage.
    (The older three-pass plugin walked by effective usage and gave up at /w/a, under the
    threshold, then killed /w/a as the largest: it never reached /w/b, whose memory.low
    shrinks its effective usage.)"""
    ranked = _rank({"/w/a": (450, 450, 1.0), "/w/b": (550, 50, 1.0)})
    assert ranked == [("/w/b", "size 550MB >= 50% of siblings' 1000MB"),
                      ("/w/a", "effective usage 450MB")]


def test_growth_phase_admits_ties_at_the_percentile_cut():
    """Growth candidates are those with effective usage at least the nth largest (n =
    ceil(5 * 20 / 100) = 1): /w/b ties /w/a for the largest, so both are in, and /w/b grows.
    (The older plugin kept exactly n cgroups, here only the first, /w/a, which is not growing.)"""
    rows = {"/w/a": (200, 200, 1.0), "/w/b": (200, 200, 2.0),
            "/w/c": (100, 100, 3.0), "/w/d": (100, 100, 1.0), "/w/e": (100, 100, 1.0)}
    ranked = _rank(rows)
    assert ranked[0] == ("/w/b", "growth 2.00 >= 1.25 among the largest 20%")
    # /w/c grows faster but is not among the largest: it ranks by effective usage only
    assert [p for p, _ in ranked[1:]] == ["/w/a", "/w/c", "/w/d", "/w/e"]
    assert ranked[2] == ("/w/c", "effective usage 100MB")


@pytest.mark.parametrize("where_, value, line", [
    ("action", "workload/*,nonexist",
     "x.toml: policy.rulesets[0].actions[0].cgroup: no cgroup '/nonexist' in memcgs"),
    ("detector", "/workload/nope/",
     "x.toml: policy.rulesets[0].detector_groups[0].detectors[0].cgroup: no cgroup '/workload/nope' in memcgs"),
])
def test_literal_cgroup_naming_nothing_fails_validation(where_, value, line):
    data = copy.deepcopy(SHIPPED)
    rs = data["policy"]["rulesets"][0]
    (rs["actions"][0] if where_ == "action" else rs["detector_groups"][0]["detectors"][0])["cgroup"] = value
    with pytest.raises(ConfigError) as exc:
        parse_config(_to_toml(data), "x.toml")
    assert str(exc.value) == line


def test_cgroup_patterns_matching_nothing_pass_validation():
    """Wildcards may match nothing (oomd then has no candidates); literals that exist pass."""
    data = copy.deepcopy(SHIPPED)
    rs = data["policy"]["rulesets"][0]
    rs["actions"][0]["cgroup"] = "workload/*,system.slice/*,workload/db"
    rs["detector_groups"][0]["detectors"][0]["cgroup"] = "/,workload/x?"
    cfg = parse_config(_to_toml(data), "x.toml")
    assert cfg.policy.params["rulesets"][0]["actions"][0]["cgroup"].endswith("workload/db")
