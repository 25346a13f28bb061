"""systemd-oomd (policies/systemd_oomd.py): the memory-pressure rule and the swap rule,
read from events.

``configs/userspace-systemd-oomd.toml``: /workload (memory.max 128 MiB, monitored with
ManagedOOMMemoryPressure=kill) holds /workload/batch (two workers allocating and reclaiming
into swap) and /workload/web (more memory, protected by memory.low, mostly asleep).
"""

from __future__ import annotations

import re

import pytest

from helpers import events, first, pids_of
from oomactors.config import Config, load_config, parse_config
from oomactors.errors import ConfigError, InputError
from oomactors.units import parse_duration
from policies.registry import ParamProblem, load_policy, validate_params
from policies.systemd_oomd import loadavg_fixed_point

CONFIG = "configs/userspace-systemd-oomd.toml"


def _load(path: str = CONFIG) -> Config:
    from conftest import ROOT
    return load_config(ROOT / path)


@pytest.fixture(scope="module")
def pressure_run():
    from conftest import run_checked
    cfg = _load()
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"psi_samples": parse_duration("1s")})})
    return run_checked(cfg)


def test_pressure_rule_kills_the_whole_cgroup_with_the_highest_pgscan(pressure_run):
    r = pressure_run
    # one action: after it the post-action delay (15 s) holds, and pressure falls
    kills = events(r, "userspace:cgroup_kill")
    assert [(k["daemon"], k["path"], k["nr_tasks"]) for k in kills] == [("systemd-oomd", "/workload/batch", 2)]
    kill = kills[0]
    assert re.search(r"memory pressure for /workload being [\d.]+% > 60\.00% for > 30s with reclaim activity",
                     kill["reason"])
    # both workers of the cgroup get SIGKILL at once and die; web lives on
    batch = set(pids_of(r, "batch"))
    sig = [s for s in events(r, "signal:signal_generate") if s["t"] == kill["t"]]
    assert {s["pid"] for s in sig} == batch and all(s["sig"] == 9 for s in sig)
    for pid in batch:
        assert first(r, "sched:sched_process_exit", pid=pid)["reason"] == "killed"
    assert first(r, "sched:sched_process_exit", pid=pids_of(r, "web")[0]) is None
    # chosen by pgscan rate, not size: web used more memory than batch at that moment
    batch_bytes = int(re.search(r"memory.current (\d+)", kill["reason"]).group(1))
    web = [e for e in events(r, "sim:memcg_usage") if e["path"] == "/workload/web" and e["t"] <= kill["t"]][-1]
    assert web["usage"] * 4096 > batch_bytes
    assert int(re.search(r"pgscan rate (\d+)", kill["reason"]).group(1)) > 0
    # the kernel's OOM killer had nothing to do
    assert not events(r, "sim:oom_kill")


def test_pressure_rule_waits_for_the_duration(pressure_run):
    """Not before the duration: full avg10 first passes 60 % at some poll; the kill comes
    exactly 30 s later (the daemon polls every second) -- and 20 s earlier with
    DefaultMemoryPressureDurationSec=10s."""
    from conftest import run_checked
    r = pressure_run
    t_kill = events(r, "userspace:cgroup_kill")[0]["t"]
    above = [e["t"] for e in events(r, "sim:psi") if e["path"] == "/workload" and e["full_avg10"] > 6000]
    t_hit = above[0]
    assert t_hit >= 10 * r.hz                    # PSI's averages lag the stall
    # (+ at most the jiffy the poll's reads cost before it acts)
    assert t_hit + 30 * r.hz <= t_kill <= t_hit + 30 * r.hz + 1
    # pressure stayed above the limit the whole time: only the duration held the kill back
    samples = [e for e in events(r, "sim:psi") if e["path"] == "/workload" and t_hit <= e["t"] <= t_kill]
    assert all(e["full_avg10"] > 6000 for e in samples)
    short = run_checked(_load(), policy=load_policy("systemd-oomd", {
        "memory_pressure": ["/workload"], "swap": [], "default_memory_pressure_duration": "10s"}),
        duration=t_kill - 19 * r.hz)
    kills = events(short, "userspace:cgroup_kill")
    assert [k["path"] for k in kills] == ["/workload/batch"]
    assert abs(kills[0]["t"] - (t_kill - 20 * r.hz)) <= 1
    assert "for > 10s" in kills[0]["reason"]


def test_no_reclaim_activity_no_kill(simulate):
    """memory.high throttling with nothing to reclaim: full pressure near 100 % for a
    minute, but pgscan never moves, so killing would not help and nothing is killed."""
    cfg = Config.model_validate({
        "machine": {"cpus": 2, "memory": "1GiB"},
        "run": {"duration": "50s", "stop_when_idle": False},
        "policy": {"name": "systemd-oomd", "memory_pressure": ["/work"], "swap": []},
        "memcgs": [{"path": "/work", "high": "30MiB", "max": "140MiB"}, {"path": "/work/hog"}],
        "tasks": [{"name": "hog", "memcg": "/work/hog", "program": [
            {"op": "alloc", "size": "200MiB"}, {"op": "sleep", "time": "100s"}]}],
    })
    r = simulate(cfg)
    last = [e for e in events(r, "sim:psi") if e["path"] == "/work"][-1]
    assert last["full_avg10"] > 9000
    assert not events(r, "userspace:cgroup_kill")


SWAP_CFG = {
    # no ZONE_DMA (CONFIG_ZONE_DMA=n): the swap-out order was tuned without it
    "machine": {"cpus": 2, "memory": "512MiB", "swap": "256MiB", "dma": 0},
    "run": {"duration": "20s"},
    "memcgs": [{"path": "/system.slice"}, {"path": "/system.slice/db.service"}, {"path": "/user.slice"}],
    "tasks": [
        {"name": "db", "memcg": "/system.slice/db.service", "rss": "160MiB",
         "program": [{"op": "sleep", "time": "100s"}]},
        {"name": "hog", "memcg": "/user.slice", "start": "1s",
         "program": [{"op": "alloc", "size": "600MiB", "rate": "32MiB/s"}, {"op": "sleep", "time": "100s"}]},
    ],
}


@pytest.mark.parametrize("params, victim", [
    # ManagedOOMSwap=kill on the root (the default): the candidate using the most swap --
    # the idle database, whose pages reclaim sent to swap first
    ({}, "/system.slice/db.service"),
    # ManagedOOMPreference=avoid puts it last: the hog goes
    ({"avoid": ["/system.slice/db.service"]}, "/user.slice"),
])
def test_swap_rule_kills_the_cgroup_using_most_swap(simulate, params, victim):
    r = simulate(Config.model_validate(SWAP_CFG), policy=load_policy("systemd-oomd", params))
    kills = events(r, "userspace:cgroup_kill")
    assert [k["path"] for k in kills] == [victim]
    nums = dict(re.findall(r"(memory used|total|swap used) \((\d+)\)", kills[0]["reason"]))
    mem_used, swap_used = (int(x) for x in re.findall(r"used \((\d+)\)", kills[0]["reason"]))
    mem_total, swap_total = (int(x) for x in re.findall(r"total \((\d+)\)", kills[0]["reason"]))
    assert nums and mem_used > 0.9 * mem_total and swap_used > 0.9 * swap_total
    # the choice is by memory.swap.current, above 5 % of all swap
    usage = {}
    for e in events(r, "sim:memcg_usage"):
        if e["t"] <= kills[0]["t"]:
            usage[e["path"]] = e["swap_usage"]
    cands = {"/system.slice/db.service", "/user.slice"} - set(params.get("avoid", ()))
    assert max(cands, key=lambda p: usage[p]) == victim
    assert int(re.search(r"swap usage of \S+: (\d+)", kills[0]["reason"]).group(1)) > swap_total * 5 // 100


def test_swap_rule_omit_and_no_swap(simulate):
    """omit leaves a cgroup out; without swap the swap rule never fires (the kernel acts)."""
    omit = load_policy("systemd-oomd", {"omit": ["/system.slice/db.service", "/user.slice"]})
    r = simulate(Config.model_validate(SWAP_CFG), policy=omit)
    assert not events(r, "userspace:cgroup_kill")
    assert [e["comm"] for e in events(r, "sim:oom_kill")] == ["hog"]


def test_params_and_limits():
    assert loadavg_fixed_point(60, 0) == 60 << 11
    # store_loadavg_fixed_point rounds the fraction up: DIV_ROUND_UP(34 << 11, 100) = 697
    assert loadavg_fixed_point(12, 34) == (12 << 11) + 697
    with pytest.raises(ParamProblem, match="not in memory_pressure"):
        validate_params("systemd-oomd", {"memory_pressure_limit": {"/a": 50}})
    with pytest.raises(ParamProblem, match="is not a cgroup path"):
        validate_params("systemd-oomd", {"swap": ["a"]})
    p = validate_params("systemd-oomd", {})
    assert (p.swap_used_limit, p.default_memory_pressure_limit, p.swap, p.memory_pressure) == (90, 60, ("/",), ())


def test_unknown_cgroup_is_an_input_error(simulate):
    """Parameters given to the policy directly (no [policy] table) are checked at run time."""
    cfg = Config.model_validate({"run": {"duration": "1s"}})
    with pytest.raises(InputError, match="no cgroup '/nope'"):
        simulate(cfg, policy=load_policy("systemd-oomd", {"memory_pressure": ["/nope"]}))


@pytest.mark.parametrize("table, line", [
    ('memory_pressure = ["/nonexist"]', "x.toml: policy.memory_pressure[0]: no cgroup '/nonexist' in memcgs"),
    ('swap = ["/", "/a/b", "/c"]', "x.toml: policy.swap[2]: no cgroup '/c' in memcgs"),
    ('memory_pressure = ["/a"]\navoid = ["/a/x"]', "x.toml: policy.avoid[0]: no cgroup '/a/x' in memcgs"),
    ('omit = ["/b"]', "x.toml: policy.omit[0]: no cgroup '/b' in memcgs"),
])
def test_policy_table_naming_an_undeclared_cgroup_fails_validation(table, line):
    text = f'[[memcgs]]\npath = "/a"\n[[memcgs]]\npath = "/a/b"\n[policy]\nname = "systemd-oomd"\n{table}\n'
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "x.toml")
    assert str(exc.value) == line
    # declared ones (and the root, always there) pass
    parse_config('[[memcgs]]\npath = "/a"\n[policy]\nname = "systemd-oomd"\nswap = ["/", "/a"]\n'
                 'memory_pressure = ["/a"]\navoid = ["/a"]\n', "x.toml")


def test_validate_command_rejects_an_undeclared_cgroup(tmp_path):
    from click.testing import CliRunner

    from oomactors.cli import main
    path = tmp_path / "x.toml"
    path.write_text('[policy]\nname = "systemd-oomd"\nmemory_pressure = ["/nonexist"]\n')
    res = CliRunner().invoke(main, ["validate", str(path)])
    assert res.exit_code == 2
    assert res.output.strip() == f"oomactors: error: {path}: policy.memory_pressure[0]: no cgroup '/nonexist' in memcgs"
