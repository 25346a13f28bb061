"""Cpusets: which nodes (and CPUs) a task may use (kernel/cgroup/cpuset.c, Linux 5.10).

The hierarchy is flat: every configured cpuset is a child of the root cpuset, whose mems
are every node.  A task in the root cpuset keeps ``mems_allowed = None`` ("every node");
a task in a cpuset carries a copy of its mems (``task->mems_allowed``), which the page
allocator reads without a lock, guarded by the per-task seqcount ``mems_allowed_seq``.

A write to a cpuset's mems (the cpuset-updater actor, config ``[[cpuset_updates]]``)
changes every task of the cpuset in two steps inside a write seqcount section
(cpuset_change_task_nodemask): first ``mems_allowed = old | new`` and the mempolicy is
rebound, then ``mems_allowed = new``.  Between the steps is the named scheduling point
``cpuset.update`` -- the window in which a racing allocation sees the union and an odd
sequence count.  An allocation whose slow path began before (or during) the update sees
the count moved in check_retry_cpuset and restarts at ``retry_cpuset``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import gfp as G
from .mempolicy import mpol_dup, mpol_new, mpol_rebind_task
from .task import PF_EXITING

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .mmzone import Zone
    from .task import Task

ROOT_NAME = "/"


class Cpuset:
    """struct cpuset, reduced to mems, cpus and the mem_hardwall flag."""

    __slots__ = ("name", "mems_allowed", "cpus_allowed", "mem_hardwall", "old_mems_allowed")

    def __init__(self, name: str, mems: frozenset[int], cpus: frozenset[int] | None,
                 mem_hardwall: bool) -> None:
        self.name = name
        self.mems_allowed = mems
        self.old_mems_allowed = mems
        self.cpus_allowed = cpus
        self.mem_hardwall = mem_hardwall

    def __repr__(self) -> str:
        return f"<Cpuset {self.name} mems={sorted(self.mems_allowed)}>"


def build_cpusets(cfg: Any) -> dict[str, Cpuset]:
    return {c.name: Cpuset(c.name, frozenset(c.mems), frozenset(c.cpus) if c.cpus is not None else None,
                           c.mem_hardwall) for c in cfg.cpusets}


def cpuset_name(tsk: "Task") -> str:
    """What the oom-kill line prints after ``cpuset=`` (the cgroup's name; the root is "/")."""
    return tsk.cpuset.name if tsk.cpuset is not None else ROOT_NAME


# --- attaching tasks -------------------------------------------------------------------
def cpuset_attach_group(m: "Machine", tsk: "Task", group: Any) -> None:
    """Put a configured task group's leader into its cpuset, then set its mempolicy
    (cgroup attach, then set_mempolicy from inside the cpuset)."""
    name = getattr(group, "cpuset", None)
    if name is not None and name != ROOT_NAME:
        cs = m.cpusets[name]
        tsk.cpuset = cs
        tsk.mems_allowed = cs.mems_allowed
        tsk.cpus_allowed = cs.cpus_allowed
    pol = getattr(group, "mempolicy", None)
    if pol is not None:
        mems = tsk.mems_allowed if tsk.mems_allowed is not None else m.all_nodes
        tsk.mempolicy = mpol_new(pol.mode, frozenset(pol.nodes), mems)
    _emit_attach(m, tsk)


def cpuset_fork(m: "Machine", parent: "Task", child: "Task") -> None:
    """A new thread or process starts in its parent's cpuset with a copy of its mems and
    of its task mempolicy (dup_task_struct, mpol_dup, cpuset_fork)."""
    child.cpuset = parent.cpuset
    child.mems_allowed = parent.mems_allowed
    child.cpus_allowed = parent.cpus_allowed
    child.mempolicy = mpol_dup(parent.mempolicy)
    child.il_prev = parent.il_prev
    _emit_attach(m, child)


def _emit_attach(m: "Machine", tsk: "Task") -> None:
    if tsk.cpuset is None and tsk.mempolicy is None:
        return  # the root cpuset and the default policy: nothing to say (traces stay as before)
    mems = tsk.mems_allowed if tsk.mems_allowed is not None else m.all_nodes
    m.emit("sim:cpuset_attach", tsk.pid, cpuset_name(tsk), m.nodelist(mems),
           tsk.mempolicy.describe() if tsk.mempolicy is not None else "default")


# --- node admission ---------------------------------------------------------------------
def nearest_hardwall_ancestor(cs: Cpuset | None) -> Cpuset | None:
    """The cpuset itself if mem_hardwall (mem_exclusive is not modelled), else its parent:
    the root (None), whose mems are every node."""
    if cs is not None and cs.mem_hardwall:
        return cs
    return None


def __cpuset_node_allowed(cur: "Task", node: int, gfp_mask: int) -> bool:
    """May ``cur`` allocate on ``node``?  Its own mems -- yes; an OOM victim -- anywhere
    (to exit quickly); a __GFP_HARDWALL request (GFP_USER and the user-page family) --
    nowhere else; an exiting task -- anywhere; any other kernel request -- the mems of
    the nearest hardwalled ancestor (the root cpuset unless the cpuset is mem_hardwall).
    (There are no interrupts in the model, so the in_interrupt() case never applies.)"""
    mems = cur.mems_allowed
    if mems is None or node in mems:
        return True
    if cur.tsk_is_oom_victim():
        return True
    if gfp_mask & G.__GFP_HARDWALL:
        return False
    if cur.flags & PF_EXITING:
        return True
    cs = nearest_hardwall_ancestor(cur.cpuset)
    return cs is None or node in cs.mems_allowed


def cpuset_zone_allowed(m: "Machine", cur: "Task", z: "Zone", gfp_mask: int) -> bool:
    if not m.cpusets_enabled:
        return True
    return __cpuset_node_allowed(cur, z.node.nid, gfp_mask)


def cpuset_mems_allowed_intersects(tsk1: "Task", tsk2: "Task") -> bool:
    a, b = tsk1.mems_allowed, tsk2.mems_allowed
    return a is None or b is None or bool(a & b)


# --- the seqcount ------------------------------------------------------------------------
def write_seqcount_begin(m: "Machine", tsk: "Task") -> int:
    """The count goes odd: readers that begin now will retry."""
    seq = m.mems_allowed_seq.get(tsk.pid, 0) + 1
    m.mems_allowed_seq[tsk.pid] = seq
    return seq


def write_seqcount_end(m: "Machine", tsk: "Task") -> int:
    """The count goes even again, two past any cookie taken before the update."""
    seq = m.mems_allowed_seq.get(tsk.pid, 0) + 1
    m.mems_allowed_seq[tsk.pid] = seq
    return seq


# --- writing cpuset.mems --------------------------------------------------------------------
async def cpuset_change_task_nodemask(m: "Machine", cur: "Task", cs: Cpuset, tsk: "Task",
                                      newmems: frozenset[int]) -> None:
    """Grow the task's mems to old | new first, so an allocation racing with us always
    finds an allowed node; rebind its mempolicy; then shrink them to new."""
    old = tsk.mems_allowed if tsk.mems_allowed is not None else m.all_nodes
    old_s, new_s = m.nodelist(old), m.nodelist(newmems)
    seq = write_seqcount_begin(m, tsk)
    m.emit("sim:cpuset_update", tsk.pid, cs.name, old_s, new_s, "begin", seq)
    tsk.mems_allowed = old | newmems
    mpol_rebind_task(tsk, newmems)
    m.emit("sim:cpuset_update", tsk.pid, cs.name, old_s, new_s, "union", seq)
    # task_lock with IRQs off on this CPU; other CPUs run on: the window a racing
    # allocation can observe (union of the masks, odd sequence count)
    await m.sched.point(cur, "cpuset.update")
    tsk.mems_allowed = newmems
    seq = write_seqcount_end(m, tsk)
    m.emit("sim:cpuset_update", tsk.pid, cs.name, old_s, new_s, "end", seq)


async def update_tasks_nodemask(m: "Machine", cur: "Task", cs: Cpuset) -> None:
    """Every task of the cpuset, in pid order (css_task_iter).  mpol_rebind_mm has nothing
    to do: VMA policies are not modelled."""
    newmems = cs.mems_allowed   # guarantee_online_mems: every node is online
    for tsk in [t for t in m.tasks.values() if t.cpuset is cs and not t.dead]:
        await cpuset_change_task_nodemask(m, cur, cs, tsk, newmems)
    cs.old_mems_allowed = newmems


async def update_nodemask(m: "Machine", cur: "Task", cs: Cpuset, newmems: frozenset[int]) -> None:
    """A write to the cpuset's ``mems`` file."""
    if newmems == cs.mems_allowed:
        return  # nodes_equal: nothing changes, the tasks are left alone
    cs.mems_allowed = newmems
    await update_tasks_nodemask(m, cur, cs)


def task_mem_nodes(m: "Machine", tsk: "Task") -> frozenset[int] | None:
    """Where the task's boot-time memory may sit: its mems, cut down by a bind or
    interleave policy (None: anywhere)."""
    nodes = tsk.mems_allowed
    pol = tsk.mempolicy
    if pol is not None and pol.nodes:
        nodes = pol.nodes if nodes is None else (nodes & pol.nodes) or nodes
    return nodes
