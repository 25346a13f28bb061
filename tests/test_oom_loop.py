"""The kernel's own selection runs its loop over the tasks (oom_select.select_bad_process_tasks)
instead of asking policies.linux over a view of every candidate: it must pick the same
victim with the same points, or abort, or find nobody, exactly when the view path does.
Random process tables -- threads with and without an mm, init and kernel threads,
oom_score_adj extremes and OOM_SCORE_ADJ_MIN, pending and reaped victims (MMF_OOM_SKIP),
vforking and oom_origin tasks, copy-on-write rss, ties -- meet global, memcg, cpuset- and
mempolicy-constrained and sysrq OOMs, under every kernel profile, every era policy and the
[kernel.fixes] switches the scan reads."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oomactors.kernel import gfp as G
from oomactors.kernel import oom_select
from oomactors.kernel.cpuset import cpuset_mems_allowed_intersects
from oomactors.kernel.mempolicy import mpol_new
from oomactors.kernel.memcontrol_tree import mem_cgroup_scan_tasks
from oomactors.kernel.oom_kill import (ABORT, OomControl, dump_tasks, find_lock_task_mm, oom_cpuset_eligible,
                                       oom_unkillable_task, select_bad_process)
from oomactors.kernel.profiles import PROFILES
from oomactors.kernel.task import MM, MMF_OOM_SKIP, PF_EXITING, Signal, Task
from policies import BUILTIN
from policies.api import Abort, Kill
from policies.linux import Linux

NZONES = 2
NODES = frozenset({0, 1})
ERA_POLICIES = [cls for cls in BUILTIN.values() if issubclass(cls, Linux)]
ADJ = st.one_of(st.sampled_from([-1000, -999, -1, 0, 1, 999, 1000]), st.integers(-1000, 1000))
PAGES = st.sampled_from([0, 1, 5, 300])  # small values: ties are common
NODESETS = st.one_of(st.none(), st.sampled_from([frozenset({0}), frozenset({1}), NODES]))


class FakeMachine:
    """What select_bad_process reads of the machine."""

    def __init__(self, procs, profile, policy, fixes) -> None:
        self.procs = procs
        self.fixes = fixes
        self.all_nodes = NODES
        self.profile = PROFILES[profile]
        self.now, self.hz = 5000, 250
        self.zones: list = []
        self.policy = policy

    def processes(self):
        return self.procs


def _memcgs():
    a = SimpleNamespace(path="/a", children=[], is_root=False, max_pages=lambda: 5000)
    b = SimpleNamespace(path="/a/b", children=[], is_root=False, max_pages=lambda: 2000)
    a.children.append(b)
    return a, b


@st.composite
def process(draw, pid: int, memcgs) -> Task:
    kthread = draw(st.integers(0, 15)) == 0
    mm = None if kthread else MM(NZONES)
    if mm is not None:
        mm.anon, mm.file, mm.shmem = ([draw(PAGES), draw(PAGES)] for _ in range(3))
        mm.swapents, mm.pgtables = draw(PAGES), [draw(st.integers(0, 2)), 0]
    sig = Signal(draw(ADJ))
    leader = Task(pid, pid, f"p{pid}", draw(st.sampled_from([0, 1000])), frozenset(), sig, mm, kthread=kthread)
    for i in range(draw(st.integers(0, 2))):  # more threads, sharing the mm
        Task(pid * 10 + i + 1, pid, f"p{pid}", leader.uid, frozenset(), sig, mm, kthread=kthread)
    if mm is not None and draw(st.integers(0, 4)) == 0:
        leader.mm = None  # the leader exited: find_lock_task_mm takes another thread, if any
    if draw(st.integers(0, 5)) == 0:
        sig.oom_mm = mm if mm is not None else MM(NZONES)  # an earlier victim
        if draw(st.booleans()):
            sig.oom_mm.flags |= MMF_OOM_SKIP
    elif mm is not None and draw(st.integers(0, 8)) == 0:
        mm.flags |= MMF_OOM_SKIP
    for t in sig.threads:
        t.in_vfork = draw(st.integers(0, 10)) == 0
        t.mems_allowed = draw(NODESETS)
        if draw(st.integers(0, 4)) == 0:
            mode = draw(st.sampled_from(["bind", "interleave", "preferred"]))
            t.mempolicy = mpol_new(mode, draw(st.sampled_from([frozenset({0}), frozenset({1})])), NODES)
    if draw(st.integers(0, 12)) == 0:
        sig.oom_origin = True
    if draw(st.integers(0, 8)) == 0:
        sig.group_exit = True
        leader.flags |= PF_EXITING
    leader.memcg = draw(st.sampled_from([None, *memcgs]))
    if draw(st.integers(0, 30)) == 0:
        sig.threads.clear()  # not a state the model reaches: no thread to ask anything
    return leader


@st.composite
def machine(draw):
    memcgs = _memcgs()
    n = draw(st.integers(0, 9))
    procs = [draw(process(pid, memcgs)) for pid in range(1, n + 1)]  # pid 1: init
    for p in procs[1:]:
        # copy-on-write from an earlier process: rss_anon counts what the source still holds
        if p.mm is not None and draw(st.integers(0, 5)) == 0:
            src = draw(st.sampled_from(procs))
            if src.mm is not None and src.mm is not p.mm:
                p.mm.cow_from, p.mm.cow = src.mm, [draw(PAGES), draw(PAGES)]
    profile = draw(st.sampled_from(sorted(PROFILES)))
    policy = draw(st.sampled_from(ERA_POLICIES))()
    fixes = {k: draw(st.booleans()) for k in ("mmf_oom_skip", "pending_victim_abort") if draw(st.booleans())}
    m = FakeMachine(procs, profile, policy, fixes)
    kind = draw(st.sampled_from(["global", "memcg", "mempolicy", "cpuset", "sysrq"]))
    oc = OomControl([], None, None, G.GFP_KERNEL, -1 if kind == "sysrq" else 0)
    oc.totalpages = draw(st.sampled_from([1, 999, 1000, 1999, 100_000, 1 << 40]))
    if kind == "memcg":
        oc.memcg = draw(st.sampled_from(memcgs))
    elif kind == "mempolicy":
        oc.nodemask = draw(st.sampled_from([frozenset({0}), frozenset({1})]))
    cur = draw(st.sampled_from(procs)) if procs and draw(st.booleans()) else Task(9999, 9999, "cur", 0, frozenset(),
                                                                                   Signal(0), MM(NZONES))
    cur.mems_allowed = draw(NODESETS) if kind == "cpuset" else cur.mems_allowed
    return m, oc, cur


def _select(m, oc, cur) -> tuple:
    oc.chosen, oc.chosen_points, oc.kill_group = None, oom_select.LONG_MIN, None
    select_bad_process(m, oc, cur)
    return oc.chosen, oc.chosen_points, oc.kill_group


@settings(max_examples=600, deadline=None)
@given(machine())
def test_kernel_loop_picks_what_the_views_pick(args):
    m, oc, cur = args
    fast = _select(m, oc, cur)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(oom_select, "kernel_loop_profile", lambda m, policy: None)
        slow = _select(m, oc, cur)
    assert fast == slow
    assert fast[0] is None or fast[0] is ABORT or fast[0] in m.procs


@settings(max_examples=600, deadline=None)
@given(machine())
def test_kernel_loop_is_select_bad_process_in_over_the_views(args):
    """The loop alone, without select_bad_process's pending-victim pass in front of it,
    against select_bad_process_in over oom_context's candidates, for every 5.9+ era."""
    m, oc, cur = args
    for era in ("linux-5.10", "linux-6.1", "linux-6.12"):
        prof = PROFILES[era]
        ctx, tasks = oom_select.oom_context(m, oc, cur)
        decision = oom_select.select_bad_process_in(ctx, prof)
        chosen, points = oom_select.select_bad_process_tasks(m, oc, cur, prof)
        if isinstance(decision, Kill):
            assert (chosen, points) == (tasks[decision.pid], decision.points)
        elif isinstance(decision, Abort):
            assert chosen is ABORT
        else:
            assert chosen is None


@settings(max_examples=300, deadline=None)
@given(machine())
def test_cpuset_eligibility_shortcut_asks_every_thread_the_same(args):
    m, oc, cur = args
    oc.memcg = None
    for p in m.procs:
        if oc.nodemask is None:
            expect = any(cpuset_mems_allowed_intersects(cur, t) for t in p.signal.threads)
            assert oom_cpuset_eligible(m, p, oc, cur) == expect


def test_the_kernel_loop_runs_for_59_eras_only_and_not_for_an_overridden_select():
    m = FakeMachine([], "linux-5.10", Linux(), {})
    for cls in ERA_POLICIES:
        for name in PROFILES:
            m.profile = PROFILES[name]
            prof = oom_select.kernel_loop_profile(m, cls())
            era = PROFILES[cls.era or name]
            assert (prof is era) == (era.badness is PROFILES["linux-5.10"].badness)

    class Mine(Linux):
        def select(self, ctx):
            return super().select(ctx)

    m.profile = PROFILES["linux-5.10"]
    assert oom_select.kernel_loop_profile(m, Linux()) is PROFILES["linux-5.10"]
    assert oom_select.kernel_loop_profile(m, Mine()) is None
    assert oom_select.kernel_loop_profile(m, BUILTIN["largest-rss"]()) is None


def test_a_pending_victim_and_a_reaped_one_in_the_kernel_loop():
    """The loop's own answers, worked by hand (5.10, ties to the later task)."""
    procs = []
    for pid, anon in ((2, 10), (3, 1000), (4, 1000)):
        mm = MM(NZONES)
        mm.anon = [anon, 0]
        procs.append(Task(pid, pid, f"p{pid}", 1000, frozenset(), Signal(0), mm))
    m = FakeMachine(procs, "linux-5.10", Linux(), {})
    oc = OomControl([], None, None, G.GFP_KERNEL, 0)
    oc.totalpages = 100_000
    assert _select(m, oc, procs[0]) == (procs[2], 1000, None)  # the later of two equals
    procs[0].signal.oom_mm = procs[0].mm
    assert _select(m, oc, procs[0])[0] is ABORT
    procs[0].mm.flags |= MMF_OOM_SKIP
    assert _select(m, oc, procs[0]) == (procs[2], 1000, None)
    procs[2].signal.oom_score_adj = -1000
    assert _select(m, oc, procs[0]) == (procs[1], 1000, None)


@settings(max_examples=300, deadline=None)
@given(machine())
def test_dump_tasks_prints_every_unkillable_free_eligible_process_with_an_mm(args):
    """The task table against its definition, asked process by process: not init, not a
    kernel thread, eligible for the constraint (a memcg OOM: its memcg's), the first thread
    with an mm, and that mm's counters."""
    m, oc, cur = args
    oc.constraint = 0
    scan = mem_cgroup_scan_tasks(m, oc.memcg) if oc.memcg is not None else m.processes()
    expect = []
    for p in scan:
        if oom_unkillable_task(p) or (oc.memcg is None and not oom_cpuset_eligible(m, p, oc, cur)):
            continue
        t = find_lock_task_mm(p)
        if t is not None:
            mm = t.mm
            expect.append([t.pid, t.uid, t.tgid, mm.total_vm, mm.get_mm_rss(), mm.pgtables_bytes(), mm.swapents,
                           t.signal.oom_score_adj, t.comm, mm.rss_anon, mm.rss_file, mm.rss_shmem, t.last_cpu])
    assert dump_tasks(m, oc, cur) == expect
