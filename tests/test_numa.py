"""Cpusets, memory policies and NUMA-constrained OOMs (Linux 5.10), read from events.

Scenarios after the kernel community's tests: LTP's oom02/oom04 (an MPOL_BIND task or a
one-node cpuset exhausting its node) and cpuset01 (cpuset.mems rewritten while a task in
the cpuset allocates).  Every run goes through the ``simulate`` fixture, so page
conservation and oom_lock exclusion are checked after every event.  The seqcount protocol
of ``check_retry_cpuset`` is also driven directly, without a run.
"""

from __future__ import annotations

import pytest

from helpers import events, pids_of, where
from oomactors import sim
from oomactors.actors.user import new_process
from oomactors.config import parse_config
from oomactors.errors import ConfigError
from oomactors.kernel import gfp as G
from oomactors.kernel.cpuset import (cpuset_attach_group, cpuset_change_task_nodemask,
                                     write_seqcount_begin, write_seqcount_end)
from oomactors.kernel.mempolicy import alloc_pages_policy, mpol_rebind_task
from oomactors.kernel.page_alloc_slow import (check_retry_cpuset, prepare_alloc_pages,
                                              read_mems_allowed_begin)
from oomactors.report import console_lines
from oomactors.units import PAGE_SIZE, MiB


def only(pids: list[int]) -> int:
    assert len(pids) == 1, pids
    return pids[0]


def oom_kill_lines(result) -> list[str]:
    return [line.split("] ", 1)[1] for line in console_lines(result.records, hz=result.hz)
            if "] oom-kill:" in line]


def ran_on(result, pid: int) -> set[int]:
    return {e["cpu"] for e in events(result, "sched:sched_switch") if e["next_pid"] == pid}


# --- mempolicy-bind: an MPOL_BIND task exhausts node 1 ------------------------------------


@pytest.fixture(scope="module")
def bind(simulate):
    return simulate("configs/mempolicy-bind.toml")


def test_bind_oom_is_constrained_by_the_policy_nodemask(bind):
    leak1 = only(pids_of(bind, "leak1"))
    headers = events(bind, "sim:oom_header")
    assert len(headers) == 1
    h = headers[0]
    assert h["pid"] == leak1
    assert (h["constraint"], h["nodemask"]) == ("CONSTRAINT_MEMORY_POLICY", "1")
    # 5.10: swap + the present pages of the nodemask's nodes
    m = bind.machine
    assert h["totalpages"] == m.node_present_pages(1) + 32 * MiB // PAGE_SIZE
    assert h["totalpages"] == events(bind, "sim:oom_victim_chosen")[0]["totalpages"]


def test_bind_oom_kills_among_tasks_whose_policy_reaches_node_1(bind):
    big0, web, leak1 = (only(pids_of(bind, n)) for n in ("big0", "web", "leak1"))
    h = events(bind, "sim:oom_header")[0]
    # dump_tasks lists only eligible tasks: a task bound to node 0 cannot free node-1 memory
    assert sorted(r[0] for r in h["rows"]) == sorted([web, leak1])
    kills = events(bind, "sim:oom_kill")
    assert [(k["pid"], k["constraint"], k["nodemask"]) for k in kills] == \
        [(web, "CONSTRAINT_MEMORY_POLICY", "1")]
    # big0 was the biggest process on the machine, and it survives
    big0_pages = where(events(bind, "sim:step"), pid=big0, op="alloc")[0]["pages"]
    assert big0_pages > events(bind, "sim:oom_victim_chosen")[0]["points"]
    exits = {e["pid"]: e["reason"] for e in events(bind, "sched:sched_process_exit")}
    assert exits[big0] == "exit" and exits[web] == "killed"
    assert oom_kill_lines(bind)[0].startswith(
        "oom-kill:constraint=CONSTRAINT_MEMORY_POLICY,nodemask=1,cpuset=/,mems_allowed=0-1,")


# --- cpuset-one-node: a cpuset with mems=[0] runs node 0 dry ------------------------------------


@pytest.fixture(scope="module")
def one_node(simulate):
    return simulate("configs/cpuset-one-node.toml")


def test_cpuset_oom_is_constrained_by_the_cpuset(one_node):
    dbleak = only(pids_of(one_node, "dbleak"))
    headers = events(one_node, "sim:oom_header")
    assert len(headers) == 1
    h = headers[0]
    assert h["pid"] == dbleak
    assert (h["constraint"], h["nodemask"], h["mems_allowed"]) == ("CONSTRAINT_CPUSET", "(null)", "0")
    assert h["totalpages"] == one_node.machine.node_present_pages(0) + 64 * MiB // PAGE_SIZE


def test_cpuset_oom_only_considers_tasks_whose_mems_intersect(one_node):
    sshd, batchjob, dbcache, dbleak = (only(pids_of(one_node, n))
                                       for n in ("sshd", "batchjob", "dbcache", "dbleak"))
    h = events(one_node, "sim:oom_header")[0]
    assert sorted(r[0] for r in h["rows"]) == sorted([sshd, dbcache, dbleak])  # not batchjob
    kills = events(one_node, "sim:oom_kill")
    assert [(k["pid"], k["constraint"], k["cpuset"], k["mems_allowed"]) for k in kills] == \
        [(dbleak, "CONSTRAINT_CPUSET", "db", "0")]
    exits = {e["pid"]: e["reason"] for e in events(one_node, "sched:sched_process_exit")}
    assert exits == {sshd: "exit", batchjob: "exit", dbcache: "exit", dbleak: "killed"}
    assert oom_kill_lines(one_node)[0].startswith(
        "oom-kill:constraint=CONSTRAINT_CPUSET,nodemask=(null),cpuset=db,mems_allowed=0,")


def test_cpuset_cpus_pin_its_tasks(one_node):
    for comm, cpus in (("dbcache", {0, 1}), ("dbleak", {0, 1}), ("batchjob", {2, 3})):
        seen = ran_on(one_node, only(pids_of(one_node, comm)))
        assert seen and seen <= cpus, (comm, seen)
    attach = {e["pid"]: (e["cpuset"], e["mems"]) for e in events(one_node, "sim:cpuset_attach")}
    assert attach[only(pids_of(one_node, "dbleak"))] == ("db", "0")
    assert attach[only(pids_of(one_node, "batchjob"))] == ("batch", "1")


# --- cpuset-race: mems rewritten under an allocator that is stuck in its slow path ------------


@pytest.fixture(scope="module")
def race(simulate):
    return simulate("configs/cpuset-race.toml")


def test_race_update_is_two_steps_inside_the_seqcount(race):
    stuck, grower = only(pids_of(race, "stuck")), only(pids_of(race, "grower"))
    updates = events(race, "sim:cpuset_update")
    assert {u["pid"] for u in updates} == {stuck, grower}  # every task of the cpuset, nobody else
    mine = where(updates, pid=grower)
    assert [(u["phase"], u["cpuset"], u["old"], u["new"]) for u in mine] == \
        [("begin", "job", "0", "1"), ("union", "job", "0", "1"), ("end", "job", "0", "1")]
    # odd while the update is in progress, even once it is over
    assert [u["seq"] % 2 for u in mine] == [1, 1, 0]
    assert mine[-1]["seq"] == mine[0]["seq"] + 1


def test_race_restarts_the_allocator_instead_of_killing_on_a_stale_cookie(race):
    grower = only(pids_of(race, "grower"))
    end = where(events(race, "sim:cpuset_update"), pid=grower, phase="end")[0]
    retries = events(race, "sim:cpuset_retry")
    assert [(r["pid"], r["where"], r["reason"]) for r in retries] == [(grower, "before_oom", "seqcount")]
    retry = retries[0]
    assert retry["i"] > end["i"] and retry["seq"] == end["seq"] and retry["cookie"] < end["seq"]
    # the slow path that retried began before the update (its cookie predates it) and had
    # not left it in between
    enter = [e for e in where(events(race, "sim:slowpath_enter"), pid=grower) if e["i"] < end["i"]][-1]
    assert not [e for e in where(events(race, "sim:slowpath_exit"), pid=grower)
                if enter["i"] < e["i"] < retry["i"]]
    # no OOM was started by grower between the update and the restart
    assert not [e for e in where(events(race, "sim:out_of_memory_enter"), pid=grower)
                if end["i"] < e["i"] < retry["i"]]


def test_race_oom_after_the_restart_is_about_the_new_mems(race):
    stuck, grower = only(pids_of(race, "stuck")), only(pids_of(race, "grower"))
    retry = events(race, "sim:cpuset_retry")[0]
    headers = events(race, "sim:oom_header")
    before = [h for h in headers if h["i"] < retry["i"]]
    after = [h for h in headers if h["i"] > retry["i"]]
    assert [(h["constraint"], h["mems_allowed"]) for h in before] == [("CONSTRAINT_CPUSET", "0")]
    assert [(h["constraint"], h["mems_allowed"]) for h in after] == [("CONSTRAINT_CPUSET", "1")]
    assert after[0]["totalpages"] == race.machine.node_present_pages(1)  # no swap
    kills = events(race, "sim:oom_kill")
    assert [(k["pid"], k["cpuset"], k["mems_allowed"]) for k in kills] == \
        [(stuck, "job", "0"), (grower, "job", "1")]
    # stuck could not die (D state, mmap_lock held): the reaper gave up on it first
    skip = where(events(race, "sim:mmf_oom_skip"), pid=stuck)
    assert skip and skip[0]["i"] < kills[1]["i"]
    lines = oom_kill_lines(race)
    assert "cpuset=job,mems_allowed=0," in lines[0] and "cpuset=job,mems_allowed=1," in lines[1]
    assert not where(events(race, "sim:oom_kill"), pid=only(pids_of(race, "filler")))


# --- the seqcount, driven directly ---------------------------------------------------------------

UNIT = """
[machine]
nodes = 2
memory = "256MiB"
[[cpusets]]
name = "job"
mems = [0]
[[tasks]]
name = "a"
cpuset = "job"
"""


def unit_machine(text: str = UNIT):
    cfg = parse_config(text)
    m = sim.build(cfg)
    m.records = []  # the events, for the asserts (nothing keeps them otherwise)
    m.sinks.append(m.records.append)
    t = new_process(m, "a", 1000, frozenset(), 0)
    cpuset_attach_group(m, t, cfg.tasks[0])
    ac, _, _ = prepare_alloc_pages(m, t, G.GFP_HIGHUSER_MOVABLE, 0, 0, None, "anon", t.mm, 0)
    ac.nodemask = None  # as __alloc_pages_nodemask hands it to the slow path
    return m, t, ac


def drive(coro) -> None:
    """Run a coroutine that never really suspends (its scheduling point does not preempt)."""
    with pytest.raises(StopIteration):
        coro.send(None)


def retries(m) -> list[dict]:
    return events(m.records, "sim:cpuset_retry")


def test_check_retry_cpuset_follows_the_seqcount():
    m, t, ac = unit_machine()
    cookie = read_mems_allowed_begin(m, t)
    assert cookie == 0 and not check_retry_cpuset(m, t, cookie, ac, "before_oom")
    # a whole update between read_mems_allowed_begin and the check: retry
    write_seqcount_begin(m, t)
    write_seqcount_end(m, t)
    assert check_retry_cpuset(m, t, cookie, ac, "before_oom")
    assert [(r["pid"], r["where"], r["reason"], r["cookie"], r["seq"]) for r in retries(m)] == \
        [(t.pid, "before_oom", "seqcount", 0, 2)]
    # a fresh cookie after the update: nothing to retry
    cookie = read_mems_allowed_begin(m, t)
    assert cookie == 2 and not check_retry_cpuset(m, t, cookie, ac, "nopage")
    # a reader that begins while an update is half done (odd count) must retry, both
    # during the update and after it
    write_seqcount_begin(m, t)
    cookie = read_mems_allowed_begin(m, t)
    assert cookie == 2 and m.mems_allowed_seq[t.pid] == 3
    assert check_retry_cpuset(m, t, cookie, ac, "nopage")
    write_seqcount_end(m, t)
    assert check_retry_cpuset(m, t, cookie, ac, "nopage")
    assert [r["where"] for r in retries(m)] == ["before_oom", "nopage", "nopage"]


def test_check_retry_cpuset_drops_a_nodemask_outside_the_cpuset():
    m, t, ac = unit_machine()
    cookie = read_mems_allowed_begin(m, t)
    ac.nodemask = frozenset({1})  # a bind policy that no longer meets mems_allowed = {0}
    assert check_retry_cpuset(m, t, cookie, ac, "nopage")
    assert ac.nodemask is None
    assert [(r["reason"], r["where"]) for r in retries(m)] == [("nodemask", "nopage")]


def test_without_cpusets_the_seqcount_is_never_read():
    m, t, ac = unit_machine('machine.nodes = 2\n[[tasks]]\nname = "a"')
    assert not m.cpusets_enabled and t.mems_allowed is None
    write_seqcount_begin(m, t)
    assert read_mems_allowed_begin(m, t) == 0
    write_seqcount_end(m, t)
    assert not check_retry_cpuset(m, t, 0, ac, "before_oom") and not retries(m)


def test_change_task_nodemask_window_shows_the_union_and_an_odd_count():
    m, t, ac = unit_machine()
    cookie = read_mems_allowed_begin(m, t)
    seen = {}

    async def window(task, name):  # the cpuset.update scheduling point: a racing reader
        seen.update(point=name, mems=t.mems_allowed, seq=m.mems_allowed_seq[t.pid],
                    cookie=read_mems_allowed_begin(m, t))

    m.sched.point = window
    drive(cpuset_change_task_nodemask(m, t, m.cpusets["job"], t, frozenset({1})))
    assert seen == {"point": "cpuset.update", "mems": frozenset({0, 1}), "seq": 1, "cookie": 0}
    assert t.mems_allowed == frozenset({1}) and m.mems_allowed_seq[t.pid] == 2
    # both the reader from before the update and the one from inside the window retry
    assert check_retry_cpuset(m, t, cookie, ac, "before_oom")
    assert check_retry_cpuset(m, t, seen["cookie"], ac, "before_oom")
    phases = [(u["phase"], u["seq"]) for u in events(m.records, "sim:cpuset_update")]
    assert phases == [("begin", 1), ("union", 1), ("end", 2)]


# --- policies on the allocation path ----------------------------------------------------------


POLICY = """
[machine]
nodes = 3
memory = "384MiB"
[[tasks]]
name = "a"
mempolicy = {{ mode = "{mode}", nodes = {nodes} }}
"""


def policy_task(mode: str, nodes: list[int]):
    cfg = parse_config(POLICY.format(mode=mode, nodes=nodes))
    m = sim.build(cfg)
    m.cpu_node = lambda cpu: 0  # the task runs on node 0
    t = new_process(m, "a", 1000, frozenset(), 0)
    cpuset_attach_group(m, t, cfg.tasks[0])
    return m, t


def test_bind_passes_its_nodemask_and_keeps_the_local_zonelist():
    m, t = policy_task("bind", [1, 2])
    assert alloc_pages_policy(m, t, G.GFP_HIGHUSER_MOVABLE, vma=True) == (0, frozenset({1, 2}))
    # lower zones get no MPOL_BIND nodemask (policy_zone is ZONE_NORMAL)
    assert alloc_pages_policy(m, t, G.GFP_KERNEL | G.__GFP_DMA32, vma=False) == (0, None)


def test_preferred_names_the_node_and_interleave_rotates_per_request():
    m, t = policy_task("preferred", [2])
    assert alloc_pages_policy(m, t, G.GFP_HIGHUSER_MOVABLE, vma=True) == (2, None)
    m, t = policy_task("interleave", [0, 2])
    got = [alloc_pages_policy(m, t, G.GFP_HIGHUSER_MOVABLE, vma=True) for _ in range(4)]
    assert got == [(0, None), (2, None), (0, None), (2, None)]


def test_rebind_remaps_the_policy_onto_the_new_mems():
    m, t = policy_task("bind", [1])
    mpol_rebind_task(t, frozenset({0, 2}))   # node 1 was the 2nd of {0,1,2}: the 2nd of {0,2}
    assert t.mempolicy.nodes == frozenset({2})
    m, t = policy_task("interleave", [0, 1, 2])
    mpol_rebind_task(t, frozenset({1}))
    assert t.mempolicy.nodes == frozenset({1})


# --- config validation --------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ('machine.nodes = 2\n[[cpusets]]\nname = "a"\nmems = []', "cpusets[0].mems: must not be empty"),
    ('machine.nodes = 2\n[[cpusets]]\nname = "a"\nmems = [0, 2]',
     "cpusets[0].mems[1]: node 2 does not exist (machine.nodes = 2)"),
    ('machine.nodes = 2\n[[cpusets]]\nname = "a"\nmems = [0]\ncpus = [4]',
     "cpusets[0].cpus[0]: CPU 4 does not exist (machine.cpus = 4)"),
    ('machine.nodes = 2\n[[cpusets]]\nname = "a"\nmems = [0]\n[[cpusets]]\nname = "a"\nmems = [1]',
     "cpusets[1].name: duplicate cpuset 'a'"),
    ('[[tasks]]\nname = "x"\ncpuset = "nope"', "tasks[0].cpuset: unknown cpuset 'nope'"),
    ('machine.nodes = 2\n[[tasks]]\nname = "x"\nmempolicy = { mode = "bind", nodes = [5] }',
     "tasks[0].mempolicy.nodes[0]: node 5 does not exist (machine.nodes = 2)"),
    ('[[tasks]]\nname = "x"\nmempolicy = { mode = "interleave" }',
     "tasks[0].mempolicy.nodes: must not be empty for mode 'interleave'"),
    ('machine.nodes = 2\n[[cpusets]]\nname = "a"\nmems = [0]\n[[tasks]]\nname = "x"\ncpuset = "a"\n'
     'mempolicy = { mode = "bind", nodes = [1] }',
     "tasks[0].mempolicy.nodes: no node of the policy is in cpuset 'a' (set_mempolicy: EINVAL)"),
    ('[[cpuset_updates]]\nat = "1s"\ncpuset = "zz"\nmems = [0]',
     "cpuset_updates[0].cpuset: unknown cpuset 'zz'"),
    ('machine.nodes = 2\n[[cpusets]]\nname = "a"\nmems = [0]\n[[cpuset_updates]]\nat = "1s"\n'
     'cpuset = "a"\nmems = [3]', "cpuset_updates[0].mems[0]: node 3 does not exist (machine.nodes = 2)"),
])
def test_numa_config_errors_name_the_key(text, message):
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "x.toml")
    assert str(exc.value) == f"x.toml: {message}"


def test_cpusets_enable_the_static_key_and_defaults_leave_it_off():
    assert not sim.build(parse_config("machine.nodes = 2")).cpusets_enabled
    m = sim.build(parse_config('machine.nodes = 2\n[[cpusets]]\nname = "a"\nmems = [1]'))
    assert m.cpusets_enabled and m.cpusets["a"].mems_allowed == frozenset({1})


def test_cpuset_node_admission_follows_the_kernels_order():
    from oomactors.kernel.cpuset import __cpuset_node_allowed
    from oomactors.kernel.task import PF_EXITING
    m, t, _ = unit_machine()            # t in cpuset "job": mems {0}, not mem_hardwall
    assert __cpuset_node_allowed(t, 0, G.GFP_HIGHUSER_MOVABLE)      # its own node
    assert not __cpuset_node_allowed(t, 1, G.GFP_HIGHUSER_MOVABLE)  # __GFP_HARDWALL: no
    assert __cpuset_node_allowed(t, 1, G.GFP_KERNEL)                # the root is the hardwall ancestor
    m.cpusets["job"].mem_hardwall = True
    assert not __cpuset_node_allowed(t, 1, G.GFP_KERNEL)            # now the cpuset itself is
    t.flags |= PF_EXITING
    assert __cpuset_node_allowed(t, 1, G.GFP_KERNEL)                # exiting: anywhere, unless HARDWALL
    assert not __cpuset_node_allowed(t, 1, G.GFP_HIGHUSER_MOVABLE)
    t.signal.oom_mm = t.mm                                          # an OOM victim: anywhere
    assert __cpuset_node_allowed(t, 1, G.GFP_HIGHUSER_MOVABLE)
