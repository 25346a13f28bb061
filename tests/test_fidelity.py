"""Issue 12's rules that change who dies or when, each checked on a real run against what
Linux does (fs/proc/base.c, kernel/fork.c, mm/vmscan.c, mm/oom_kill.c of 5.10 and 2.4).

Every run goes through the ``simulate`` fixture, so page conservation and oom_lock mutual
exclusion are checked after every event as well.
"""

from __future__ import annotations

import copy

import pytest

from helpers import events, pids_of, where

from oomactors.config import Config

EACCES = 13


def config(tasks: dict, *, machine: dict | None = None, kernel: dict | None = None,
           duration: str = "20s", **extra) -> Config:
    data = {
        "machine": {"cpus": 2, "memory": "1GiB", "swap": "0", "page_cache": "64MiB", "dirty": "0",
                    **(machine or {})},
        "kernel": {"profile": "linux-5.10", **(kernel or {})},
        "run": {"duration": duration, "seed": 0, "stop_when_idle": True},
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
