"""The checkers ``no_unkillable_killed`` and ``memcg_events_consistent``: on hand-made event
sequences (each rule broken once), and on real runs, where a broken kill policy and a
model with a memory.events update removed must be caught."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from helpers import events, pids_of
from oomactors.config import parse_config
from oomactors.events import EVENT_ID, EVENTS
from oomactors.explore import explore, load_repro, replay_repro
from oomactors.invariants import (INVARIANTS, InvariantViolation, MemcgEventsConsistent,
                                  no_unkillable_killed)
from oomactors.testing.plugin import SimFailure
from policies.api import Kill, KillPolicy, OomContext
from policies.linux import Linux


def ev(kind_name: str, t: int = 10, pid: int = 1, cpu: int = 0, **fields) -> tuple:
    """A record of kind ``kind_name``, its fields by name (missing ones empty)."""
    eid = EVENT_ID[kind_name]
    return (t, eid, cpu, pid, *(fields.get(f, "") for f in EVENTS[eid].fields))


def kill(pid: int, memcg: str = "/", adj: int = 0, cur: int = 99, t: int = 10) -> tuple:
    return ev("sim:oom_kill", t=t, pid=pid, message="Out of memory", comm=f"task{pid}",
              oom_score_adj=adj, task_memcg=memcg, cur_pid=cur, oom_memcg="")


def memcg_event(path: str, name: str, local: int, cur: int = 99) -> tuple:
    return ev("sim:memcg_event", pid=cur, path=path, name=name, local=local, usage=0)


def machine(memcgs=(), tasks=None, processes=(), policy="linux"):
    cgs = {"/": SimpleNamespace(is_root=True)}
    for path in memcgs:
        cgs[path] = SimpleNamespace(is_root=False, events={"oom_kill": 0, "oom_group_kill": 0},
                                    events_local={"oom_kill": 0, "oom_group_kill": 0})
    return SimpleNamespace(memcgs=cgs, tasks=tasks or {}, policy=SimpleNamespace(name=policy),
                           processes=lambda: list(processes))


def feed(check, m, records) -> None:
    for rec in records:
        check(m, rec)


# --- no_unkillable_killed ----------------------------------------------------------------------


def test_no_unkillable_killed_on_hand_made_events():
    m = machine(tasks={7: SimpleNamespace(signal=SimpleNamespace(oom_score_adj=0)),
                       8: SimpleNamespace(signal=SimpleNamespace(oom_score_adj=-1000))})
    ok = [kill(5, adj=0), kill(6, adj=-999), kill(9, adj=1000),
          ev("sim:oom_kill_shared", pid=7, comm="sharer", victim=5, victim_comm="task5"),
          ev("oom:mark_victim", pid=8, comm="exiting", oom_score_adj=-1000)]  # reserves, not a kill
    feed(INVARIANTS["no_unkillable_killed"](), m, ok)
    with pytest.raises(InvariantViolation) as broken:
        no_unkillable_killed(m, kill(4, adj=-1000, t=33))
    assert broken.value.invariant == "no_unkillable_killed"
    assert broken.value.record[0] == 33
    assert str(broken.value) == ("t=33: the OOM killer killed pid 4 (task4) whose oom_score_adj is "
                                 "-1000 (OOM_SCORE_ADJ_MIN)")
    with pytest.raises(InvariantViolation, match=r"SIGKILL to pid 8 .* sharing the mm of victim 5"):
        no_unkillable_killed(m, ev("sim:oom_kill_shared", pid=8, comm="sharer", victim=5,
                                   victim_comm="task5"))


# --- memcg_events_consistent ------------------------------------------------------------------


def _books(m, path, oom_kill=0, local=0, group=0, group_local=0):
    c = m.memcgs[path]
    c.events.update(oom_kill=oom_kill, oom_group_kill=group)
    c.events_local.update(oom_kill=local, oom_group_kill=group_local)


def test_memcg_events_consistent_accepts_the_kernel_sequence():
    m = machine(memcgs=("/a", "/a/b"))
    _books(m, "/a/b", oom_kill=1, local=1)
    _books(m, "/a", oom_kill=1)
    check = MemcgEventsConsistent()
    feed(check, m, [memcg_event("/a/b", "oom", 1), memcg_event("/a", "oom", 0),  # other counters: ignored
                    memcg_event("/a/b", "oom_kill", 1), memcg_event("/a", "oom_kill", 0),
                    ev("signal:signal_generate", pid=5), kill(5, "/a/b"),
                    kill(6, "/"),  # the root has no memory.events
                    ev("sim:run_end", reason="idle")])


BROKEN = {
    # the ancestor's hierarchical counter did not move
    "missing ancestor": ([memcg_event("/a/b", "oom_kill", 1), kill(5, "/a/b")],
                         r"the kill of pid 5 in /a/b: memory.events oom_kill went up on \[\('/a/b', 1\)\], "
                         r"expected \[\('/a/b', 1\), \('/a', 0\)\]"),
    "wrong memcg": ([memcg_event("/a", "oom_kill", 1), kill(5, "/a/b")], "the kill of pid 5 in /a/b"),
    "local on the ancestor": ([memcg_event("/a/b", "oom_kill", 0), memcg_event("/a", "oom_kill", 1),
                               kill(5, "/a/b")], "expected"),
    "counted twice": ([memcg_event("/a", "oom_kill", 1), memcg_event("/a", "oom_kill", 1), kill(5, "/a")],
                      "expected"),
    "stray event in a root kill": ([memcg_event("/a", "oom_kill", 1), kill(5, "/")], r"expected \[\]"),
    "event without a kill": ([memcg_event("/a", "oom_kill", 1), ev("sim:run_end", reason="idle")],
                             "have no matching kill"),
    "group sweep without oom_group_kill": ([ev("sim:memcg_oom_group", path="/a")],
                                           "the oom.group sweep of /a: memory.events oom_group_kill"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_memcg_events_consistent_catches(name):
    records, message = BROKEN[name]
    with pytest.raises(InvariantViolation, match=message) as broken:
        feed(MemcgEventsConsistent(), machine(memcgs=("/a", "/a/b")), records)
    assert broken.value.invariant == "memcg_events_consistent"


def test_memcg_events_consistent_compares_the_machine_counters():
    m = machine(memcgs=("/a",))
    _books(m, "/a", oom_kill=2, local=2)  # the machine counted a kill the stream does not show
    with pytest.raises(InvariantViolation, match=r"/a memory.events oom_kill=2 \(local 2\), the event "
                                                 r"stream says 1 \(local 1\)"):
        feed(MemcgEventsConsistent(), m, [memcg_event("/a", "oom_kill", 1), kill(5, "/a")])


def _proc(pid, path, adj=0, killed=False):
    return SimpleNamespace(pid=pid, comm=f"task{pid}", memcg=SimpleNamespace(path=path),
                           is_global_init=False, is_kthread=False,
                           signal=SimpleNamespace(oom_score_adj=adj, group_exit=killed,
                                                  threads=[SimpleNamespace(mm=object())]))


def test_memcg_events_consistent_checks_the_oom_group_sweep():
    group = [memcg_event("/a", "oom_group_kill", 1), ev("sim:memcg_oom_group", pid=99, path="/a")]
    done = ev("sim:out_of_memory_return", pid=99, result=1, reason="killed")
    members = [_proc(5, "/a/b", killed=True), _proc(6, "/a", adj=-1000), _proc(7, "/c")]
    m = machine(memcgs=("/a", "/a/b", "/c"), processes=members)
    _books(m, "/a", group=1, group_local=1)
    feed(MemcgEventsConsistent(), m, group + [done])  # -1000 and outside the group: spared
    # a sweep that reaches outside its memcg
    outside = "pid 7 in /c was killed by the memory.oom.group sweep of /a"
    with pytest.raises(InvariantViolation, match=outside):
        feed(MemcgEventsConsistent(), m, group + [memcg_event("/c", "oom_kill", 1), kill(7, "/c")])
    # a member the sweep left alive
    m2 = machine(memcgs=("/a", "/a/b"), processes=[_proc(5, "/a/b", killed=False)])
    _books(m2, "/a", group=1, group_local=1)
    survivor = r"pid 5 \(task5\) in /a/b survived the memory.oom.group sweep"
    with pytest.raises(InvariantViolation, match=survivor):
        feed(MemcgEventsConsistent(), m2, group + [done])
    # a kill policy's whole-cgroup kill is not memory.oom.group: no memory.events
    feed(MemcgEventsConsistent(), machine(memcgs=("/a",), policy="kill-cgroup"),
         [ev("sim:memcg_oom_group", pid=99, path="/a"), done])


# --- on real runs ------------------------------------------------------------------------------

UNKILLABLE = parse_config("""
[machine]
cpus = 2
memory = "64MiB"
[run]
duration = "2s"
[[tasks]]
name = "sshd"
oom_score_adj = -1000
rss = "24MiB"
program = [{ op = "sleep", time = "5s" }]
[[tasks]]
name = "hog"
start = "10ms"
program = [{ op = "alloc", size = "48MiB" }, { op = "sleep", time = "1s" }]
""")


class KillsUnkillable(KillPolicy):
    """A deliberately broken policy: the biggest task at oom_score_adj -1000 dies first."""

    name = "kills-unkillable"
    description = "broken on purpose: prefers tasks the kernel never kills"

    def select(self, ctx: OomContext):
        pending = self.pending_victim(ctx)
        if pending is not None:
            return pending
        doomed = [t for t in ctx.candidates if t.oom_score_adj == -1000 and not t.has("oom_victim")]
        if doomed:
            best = max(doomed, key=lambda t: t.rss)
            return Kill(best.pid, best.rss)
        return Linux().select(ctx)


def test_the_kernel_spares_the_unkillable_task(oom_sim):
    r = oom_sim(UNKILLABLE, checks=("no_unkillable_killed",))
    assert [k["pid"] for k in events(r, "sim:oom_kill")] == pids_of(r, "hog")


def test_a_policy_that_kills_a_minus_1000_task_is_caught(oom_sim):
    with pytest.raises(SimFailure) as failed:
        oom_sim(UNKILLABLE, policy=KillsUnkillable(), checks=("no_unkillable_killed",))
    exc = failed.value
    sshd = pids_of(exc.records, "sshd")[0]
    assert exc.invariant == "no_unkillable_killed"
    assert exc.message.endswith(f"the OOM killer killed pid {sshd} (sshd) whose oom_score_adj is -1000 "
                                "(OOM_SCORE_ADJ_MIN)")
    assert exc.records[-1][1] == EVENT_ID["sim:oom_kill"] and exc.records[-1][3] == sshd
    # the reproducer names the policy by module:class and replays to the same violation
    repro = load_repro(exc.repro_path)
    assert repro.policy == f"{KillsUnkillable.__module__}:KillsUnkillable"
    outcome, _ = replay_repro(repro, keep_records=True)
    assert outcome.invariant == "no_unkillable_killed"
    assert outcome.records[: len(exc.records)] == exc.records


def test_explore_catches_the_broken_policy():
    result = explore(UNKILLABLE, ["no_unkillable_killed"], budget=3, policy=KillsUnkillable())
    assert result.violation is not None and result.violation.invariant == "no_unkillable_killed"
    assert result.violation.found_at == 1  # no perturbation needed: the policy is simply wrong


# memory.events' oom_group_kill counter came in 5.17: the group-kill checks need a 6.x era
OOM_GROUP = parse_config("""
[machine]
cpus = 2
memory = "256MiB"
[kernel]
profile = "linux-6.12"
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
name = "keeper"
memcg = "/work/leaf"
oom_score_adj = -1000
rss = "4MiB"
program = [{ op = "sleep", time = "10s" }]
[[tasks]]
name = "hog"
memcg = "/work/leaf"
start = "100ms"
program = [{ op = "alloc", size = "100MiB" }]
""")


def test_memcg_events_consistent_on_a_memory_oom_group_kill(oom_sim):
    r = oom_sim(OOM_GROUP, checks=("memcg_events_consistent", "no_unkillable_killed"))
    kills = events(r, "sim:oom_kill")
    assert {k["pid"] for k in kills} == set(pids_of(r, "member") + pids_of(r, "hog"))
    group = [e for e in events(r, "sim:memcg_event") if e["name"] == "oom_group_kill"]
    assert [(e["path"], e["local"]) for e in group] == [("/work/leaf", 1), ("/work", 0)]
    oom_kill = [e for e in events(r, "sim:memcg_event") if e["name"] == "oom_kill"]
    assert len(oom_kill) == 2 * len(kills)  # the leaf and /work for each kill


@pytest.mark.parametrize("mutation", ["oom_kill", "oom_group_kill"])
def test_memcg_events_consistent_catches_a_model_that_skips_the_event(oom_sim, monkeypatch, mutation):
    from oomactors.kernel import oom_victim  # where the kill bumps memory.events
    if mutation == "oom_kill":
        monkeypatch.setattr(oom_victim, "memcg_memory_event_mm", lambda *a, **kw: None)
    else:
        real = oom_victim.memcg_memory_event
        monkeypatch.setattr(oom_victim, "memcg_memory_event",
                            lambda m, c, name, *a: None if name == "oom_group_kill" else real(m, c, name, *a))
    with pytest.raises(SimFailure) as failed:
        oom_sim(OOM_GROUP, checks=("memcg_events_consistent",))
    assert failed.value.invariant == "memcg_events_consistent"
    assert f"memory.events {mutation} went up on [], expected [('/work/leaf', 1), ('/work', 0)]" \
        in failed.value.message
