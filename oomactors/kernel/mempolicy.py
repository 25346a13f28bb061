"""NUMA memory policies (mm/mempolicy.c, Linux 5.10), for the task policy only.

A task's policy decides, for every page allocation it makes, which node's zonelist the
allocator walks (the *preferred* node) and whether a nodemask restricts it:

* no policy (MPOL_DEFAULT): the local node, no nodemask;
* ``preferred``: the policy's node first, then every other node (no nodemask);
  with an empty node list it means "local" (MPOL_F_LOCAL);
* ``bind``: the local node's zonelist restricted to the policy's nodes -- the nodemask
  that makes an OOM CONSTRAINT_MEMORY_POLICY;
* ``interleave``: the preferred node rotates over the policy's nodes, one step per
  request (the per-task ``il_prev`` of interleave_nodes), no nodemask.

Policies are created against the task's cpuset (mpol_set_nodemask keeps only nodes the
cpuset allows) and rebound when the cpuset's mems change (mpol_rebind_policy remaps
them).  VMA policies (mbind) are not modelled: every allocation uses the task policy,
as alloc_pages_vma does when a VMA has none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import gfp as G
from .mmzone import ZONE_MOVABLE

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .task import Task

# include/uapi/linux/mempolicy.h (5.10)
MPOL_DEFAULT, MPOL_PREFERRED, MPOL_BIND, MPOL_INTERLEAVE = 0, 1, 2, 3
MPOL_F_LOCAL = 1 << 1          # preferred local allocation (an empty "preferred" node list)
MODES = {"preferred": MPOL_PREFERRED, "bind": MPOL_BIND, "interleave": MPOL_INTERLEAVE}
MODE_NAMES = {v: k for k, v in MODES.items()}
MAX_NUMNODES = 1 << 10         # CONFIG_NODES_SHIFT=10


class Mempolicy:
    """struct mempolicy: the mode, the nodes (v.nodes / v.preferred_node) and the cpuset
    mems it was made against (w.cpuset_mems_allowed, for rebinding)."""

    __slots__ = ("mode", "flags", "nodes", "preferred_node", "cpuset_mems_allowed")

    def __init__(self, mode: int, flags: int = 0) -> None:
        self.mode = mode
        self.flags = flags
        self.nodes: frozenset[int] = frozenset()
        self.preferred_node = -1
        self.cpuset_mems_allowed: frozenset[int] = frozenset()

    def describe(self) -> str:
        """``bind:0-1``, ``preferred:1``, ``preferred:local``, ``interleave:0,2``."""
        from ..machine import Machine
        if self.mode == MPOL_PREFERRED:
            where = "local" if self.flags & MPOL_F_LOCAL else str(self.preferred_node)
        else:
            where = Machine.nodelist(self.nodes)
        return f"{MODE_NAMES[self.mode]}:{where}"

    def __repr__(self) -> str:
        return f"<Mempolicy {self.describe()}>"


def mpol_new(mode: str, nodes: frozenset[int], cpuset_mems: frozenset[int]) -> Mempolicy:
    """do_set_mempolicy: mpol_new + mpol_set_nodemask against the task's cpuset mems.

    Only the nodes the cpuset allows are kept; none left is -EINVAL (ValueError), which
    the config validation reports before a run starts."""
    pol = Mempolicy(MODES[mode])
    if pol.mode == MPOL_PREFERRED and not nodes:
        pol.flags |= MPOL_F_LOCAL      # explicit local allocation
        return pol
    allowed = nodes & cpuset_mems
    pol.cpuset_mems_allowed = cpuset_mems
    if not allowed:
        raise ValueError("no node of the policy is in the cpuset's mems (EINVAL)")
    if pol.mode == MPOL_PREFERRED:
        pol.preferred_node = min(allowed)   # first_node
    else:
        pol.nodes = frozenset(allowed)
    return pol


def mpol_dup(pol: Mempolicy | None) -> Mempolicy | None:
    """fork/clone: the child gets its own copy of the task policy."""
    if pol is None:
        return None
    new = Mempolicy(pol.mode, pol.flags)
    new.nodes, new.preferred_node = pol.nodes, pol.preferred_node
    new.cpuset_mems_allowed = pol.cpuset_mems_allowed
    return new


# --- rebinding on a cpuset mems change ------------------------------------------------
def node_remap(n: int, old: frozenset[int], new: frozenset[int]) -> int:
    """bitmap_bitremap: the k-th node of ``old`` becomes the (k mod |new|)-th node of
    ``new``; a node outside ``old`` (or an empty map) stays where it is."""
    if not old or not new or n not in old:
        return n
    o, w = sorted(old), sorted(new)
    return w[o.index(n) % len(w)]


def nodes_remap(src: frozenset[int], old: frozenset[int], new: frozenset[int]) -> frozenset[int]:
    return frozenset(node_remap(n, old, new) for n in src)


def mpol_rebind_policy(pol: Mempolicy | None, newmask: frozenset[int]) -> None:
    """Follow the cpuset to its new mems (no MPOL_F_STATIC/RELATIVE_NODES flags modelled)."""
    if pol is None:
        return
    if not pol.flags & MPOL_F_LOCAL and pol.cpuset_mems_allowed == newmask:
        return
    if pol.mode == MPOL_PREFERRED:
        # mpol_rebind_preferred: a local policy stays local
        if not pol.flags & MPOL_F_LOCAL:
            pol.preferred_node = node_remap(pol.preferred_node, pol.cpuset_mems_allowed, newmask)
            pol.cpuset_mems_allowed = newmask
        return
    # mpol_rebind_nodemask: bind and interleave
    tmp = nodes_remap(pol.nodes, pol.cpuset_mems_allowed, newmask)
    pol.cpuset_mems_allowed = newmask
    if not tmp:
        tmp = newmask
    pol.nodes = tmp


def mpol_rebind_task(tsk: "Task", new: frozenset[int]) -> None:
    mpol_rebind_policy(tsk.mempolicy, new)


# --- the allocation side ------------------------------------------------------------------
def numa_node_id(m: "Machine", cur: "Task") -> int:
    """The node of the CPU the task runs (or last ran) on."""
    return m.cpu_node(cur.cpu.id if cur.cpu is not None else cur.last_cpu)


def get_task_policy(cur: "Task") -> Mempolicy | None:
    """The task policy; None stands for the default (preferred_node_policy[local node]:
    the local node first, no nodemask)."""
    return cur.mempolicy


def policy_zone(m: "Machine") -> int:
    """The highest zone type with memory (ZONE_NORMAL here): lower-zone requests get no
    MPOL_BIND nodemask."""
    return max(z.idx for z in m.zones if z.idx < ZONE_MOVABLE)


def apply_policy_zone(m: "Machine", pol: Mempolicy, zone: int) -> bool:
    # every node of the model has ZONE_NORMAL memory (N_HIGH_MEMORY), so the dynamic
    # policy zone never moves up to ZONE_MOVABLE
    return zone >= policy_zone(m)


def cpuset_nodemask_valid_mems_allowed(cur: "Task", nodemask: frozenset[int]) -> bool:
    """Does the nodemask intersect the task's mems_allowed (None: every node)?"""
    mems = cur.mems_allowed
    return mems is None or bool(nodemask & mems)


def policy_nodemask(m: "Machine", cur: "Task", gfp_mask: int, pol: Mempolicy) -> frozenset[int] | None:
    """Only MPOL_BIND restricts the nodes, and only for the policy zone and above, and only
    while the policy still intersects the cpuset (otherwise it is ignored)."""
    if (pol.mode == MPOL_BIND and apply_policy_zone(m, pol, G.gfp_zone(gfp_mask))
            and cpuset_nodemask_valid_mems_allowed(cur, pol.nodes)):
        return pol.nodes
    return None


def policy_node(gfp_mask: int, pol: Mempolicy, nd: int) -> int:
    """MPOL_PREFERRED names the node; MPOL_BIND keeps the local node (its zonelist, cut down
    by the nodemask, is walked: bind allocations are node-local within the mask)."""
    if pol.mode == MPOL_PREFERRED and not pol.flags & MPOL_F_LOCAL:
        nd = pol.preferred_node
    return nd


def next_node_in(prev: int, nodes: frozenset[int]) -> int:
    later = [n for n in nodes if n > prev]
    return min(later) if later else min(nodes)


def interleave_nodes(cur: "Task", pol: Mempolicy) -> int:
    """Dynamic interleaving for a process: the node after the last one used."""
    nxt = next_node_in(cur.il_prev, pol.nodes)
    cur.il_prev = nxt
    return nxt


def alloc_pages_policy(m: "Machine", cur: "Task", gfp_mask: int, *,
                       vma: bool) -> tuple[int, frozenset[int] | None]:
    """The preferred node and nodemask that alloc_pages_vma (a fault, ``vma``) or
    alloc_pages_current (anything else) hand to __alloc_pages_nodemask.

    Interleaving rotates once per request: the model asks for a chunk of pages at once,
    so a chunk lands on one node (the kernel interleaves a VMA page by page, by offset)."""
    nid = numa_node_id(m, cur)
    pol = get_task_policy(cur)
    if pol is None or (not vma and gfp_mask & G.__GFP_THISNODE):
        return nid, None
    if pol.mode == MPOL_INTERLEAVE:
        return interleave_nodes(cur, pol), None      # alloc_page_interleave: no nodemask
    return policy_node(gfp_mask, pol, nid), policy_nodemask(m, cur, gfp_mask, pol)


# --- the OOM killer's view ------------------------------------------------------------------
def mempolicy_nodemask_intersects(tsk: "Task", mask: frozenset[int] | None) -> bool:
    """Could the task have memory on the mask's nodes?  A preferred (or default) policy may
    fall back anywhere, so only bind and interleave policies can say no."""
    if mask is None:
        return True
    pol = tsk.mempolicy
    if pol is None or pol.mode == MPOL_PREFERRED:
        return True
    return bool(pol.nodes & mask)
