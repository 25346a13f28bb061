"""Direct reclaim's passes over nodes with nothing on their lists, made without
shrink_node's frame (kernel/vmscan.py's priority loop calls :func:`empty_passes` first).

Most passes of a starved node scan nothing: each still costs RECLAIM_BASE_NS and records
``vmscan:mm_vmscan_node_reclaim`` with zeros.  Made here in a tight loop, they give the
same time charged at the same points, the same events and the same state -- pure speed.
A node whose lists are empty but whose slab is above its floor still calls the shrinker
on every pass; while the shrinker's target stays under a batch (or it refuses without
__GFP_FS) it only carries the work over (``nr_deferred`` grows, nothing is freed), and
those passes are made here too, each with its deferred arithmetic (kernel/shrinker.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import params
from .shrinker import deferred_only

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .mmzone import Node, Zone
    from .task import Task
    from .vmscan import ScanControl

_NODE_RECLAIM = "vmscan:mm_vmscan_node_reclaim"


def empty_passes(m: "Machine", cur: "Task", nodes: list[Node], sc: ScanControl) -> int:
    """shrink_node's passes over nodes with nothing on their lists, without its frame (most
    passes of a starved node; pure speed: the same time, events and state).  From the
    round at sc.priority, as many passes as fit in the jiffy begun -- nothing else runs
    meanwhile, so the lists stay empty -- going on to the next priority after each whole
    round while the loop would, and stopping before the first pass whose shrinker would
    scan.  Returns how many passes of the round at sc.priority are done; the caller makes
    the rest, the first of which will cross a jiffy (sc.next_pass_empty: a pass for
    :func:`empty_pass`) or free slab."""
    if len(m.memcgs) > 1:
        return 0  # protected memcgs: shrink_node's walk has effects of its own
    slab: list[tuple[int, Zone]] = []  # (the node's place in a round, a zone above its floor)
    for i, node in enumerate(nodes):
        zones = _shrinker_zones(m, node, sc)
        if zones is None:
            return 0
        for zone in zones:
            slab.append((i, zone))
    ns = params.RECLAIM_BASE_NS  # nothing scanned
    per_round = len(nodes)
    # sched.run_nowait's test, pass by pass: the i-th pass fits while debt + i * ns < a jiffy
    fit = (m.sched.jiffy_ns - 1 - cur.cpu_debt_ns) // ns
    # the rounds the priority loop makes: one if it stops after any round, else down to 0
    rounds = 1 if sc.nr_reclaimed >= sc.nr_to_reclaim else sc.priority + 1
    passes = min(fit, rounds * per_round)
    if passes <= 0:
        sc.next_pass_empty = not slab
        return 0
    if slab:
        passes = _deferring_passes(m, cur, nodes, sc, slab, passes)
        if not passes:
            return 0
    else:
        sc.may_deactivate = -1
        if per_round == 1:
            m.emit_charged(cur, ns, passes, _NODE_RECLAIM, cur.pid, nodes[0].nid, 0, 0, 0, 0)
        else:
            for i in range(passes):
                node = nodes[i % per_round]
                m.emit_charged(cur, ns, 1, _NODE_RECLAIM, cur.pid, node.nid, 0, 0, 0, 0)
    if passes == rounds * per_round:  # the loop's last round: it returns at the same priority
        sc.priority -= rounds - 1
        return per_round
    sc.priority -= passes // per_round  # cut short: the caller makes the rest
    sc.next_pass_empty = not slab       # by the jiffy, then the next pass is empty too
    return passes % per_round


async def empty_pass(m: "Machine", cur: "Task", node: Node, sc: ScanControl) -> None:
    """shrink_node's pass over ``node`` with nothing on its lists and no slab above the
    floor, when its time ends the jiffy begun (:func:`empty_passes` stopped before it; the
    scheduling point is shrink_node's)."""
    sc.may_deactivate = -1
    ns = params.RECLAIM_BASE_NS
    if not m.sched.run_nowait(cur, ns):
        await m.sched.run(cur, ns, "reclaim.scan")
    m.emit(_NODE_RECLAIM, cur.pid, node.nid, 0, 0, 0, 0)


def _deferring_passes(m: "Machine", cur: "Task", nodes: list[Node], sc: ScanControl,
                      slab: list[tuple[int, Zone]], passes: int) -> int:
    """Up to ``passes`` passes from the round at sc.priority, each charged and recorded
    after its shrinker calls have carried their work over (``slab``: the zones whose slab
    is above the floor, by their node's place in a round); stops before the first pass
    in which one of them would scan.  Returns the passes made."""
    per_round = len(nodes)
    deferred = m.slab_deferred
    floor = m.slab_floor
    gfp_mask = sc.gfp_mask
    ns = params.RECLAIM_BASE_NS
    by_node: list[list[tuple[int, int]]] = [[] for _ in nodes]  # (gid, freeable)
    for i, zone in slab:
        by_node[i].append((zone.gid, zone.nr["slab_reclaimable"] - floor[zone.gid]))
    for k in range(passes):
        i = k % per_round
        priority = sc.priority - k // per_round
        after = []
        for g, freeable in by_node[i]:
            d = deferred_only(deferred[g], freeable, priority, gfp_mask)
            if d is None:
                return k  # this pass would free slab: shrink_node makes it
            after.append((g, d))
        if not k:
            sc.may_deactivate = -1
        for g, d in after:
            deferred[g] = d
        m.emit_charged(cur, ns, 1, _NODE_RECLAIM, cur.pid, nodes[i].nid, 0, 0, 0, 0)
    return passes


def _shrinker_zones(m: "Machine", node: Node, sc: ScanControl) -> list[Zone] | None:
    """None if shrink_node (no memcg protection in play) would find pages on the lists of
    some zone it looks at on ``node`` for ``sc``, at its priority or a lower one; else the
    zones whose reclaimable slab is above the floor -- the shrinker frees or defers work
    from any of it, also without __GFP_FS (kernel/shrinker.py) -- empty if none."""
    can_swap = sc.can_swap(m)
    reclaim_idx = sc.reclaim_idx
    floor = m.slab_floor
    zones = []
    for zone in node.zones:
        if zone.idx > reclaim_idx:
            continue
        nr = zone.nr
        if nr["file"] + nr["dirty"] or (can_swap and nr["anon"] + nr["shmem"]):
            return None
        if nr["slab_reclaimable"] > floor[zone.gid]:
            zones.append(zone)
    return zones


def _nothing_to_scan(m: "Machine", node: Node, sc: ScanControl) -> bool:
    """True if shrink_node would do nothing at all on ``node`` for ``sc``: empty lists and
    no slab above the floor."""
    return _shrinker_zones(m, node, sc) == []
