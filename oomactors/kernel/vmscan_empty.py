"""Direct reclaim's passes over nodes with nothing to reclaim, made without
shrink_node's frame (kernel/vmscan.py's priority loop calls :func:`empty_passes` first).

Most passes of a starved node scan nothing: each still costs RECLAIM_BASE_NS and records
``vmscan:mm_vmscan_node_reclaim`` with zeros.  Made here in a tight loop, they give the
same time charged at the same points, the same events and the same state -- pure speed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import params

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .mmzone import Node
    from .task import Task
    from .vmscan import ScanControl


def empty_passes(m: "Machine", cur: "Task", nodes: list[Node], sc: ScanControl) -> int:
    """shrink_node's passes over nodes with nothing on their lists, without its frame (most
    passes of a starved node; pure speed: the same time, events and state).  From the
    round at sc.priority, as many passes as fit in the jiffy begun -- nothing else runs
    meanwhile, so the lists stay empty -- going on to the next priority after each whole
    round while the loop would.  Returns how many passes of the round at sc.priority are
    done; the caller makes the rest, the first of which will cross a jiffy."""
    if len(m.memcgs) > 1:
        return 0  # protected memcgs: shrink_node's walk has effects of its own
    for node in nodes:
        if not _nothing_to_scan(m, node, sc):
            return 0
    ns = params.RECLAIM_BASE_NS  # nothing scanned
    per_round = len(nodes)
    # sched.run_nowait's test, pass by pass: the i-th pass fits while debt + i * ns < a jiffy
    fit = (m.sched.jiffy_ns - 1 - cur.cpu_debt_ns) // ns
    # the rounds the priority loop makes: one if it stops after any round, else down to 0
    rounds = 1 if sc.nr_reclaimed >= sc.nr_to_reclaim else sc.priority + 1
    passes = min(fit, rounds * per_round)
    if passes <= 0:
        return 0
    sc.may_deactivate = -1
    if per_round == 1:
        m.emit_charged(cur, ns, passes, "vmscan:mm_vmscan_node_reclaim", cur.pid, nodes[0].nid, 0, 0, 0, 0)
    else:
        for i in range(passes):
            node = nodes[i % per_round]
            m.emit_charged(cur, ns, 1, "vmscan:mm_vmscan_node_reclaim", cur.pid, node.nid, 0, 0, 0, 0)
    if passes == rounds * per_round:  # the loop's last round: it returns at the same priority
        sc.priority -= rounds - 1
        return per_round
    sc.priority -= passes // per_round  # cut short by the jiffy: the caller makes the rest
    return passes % per_round


def _nothing_to_scan(m: "Machine", node: Node, sc: ScanControl) -> bool:
    """True if shrink_node (no memcg protection in play) would do nothing at all on
    ``node`` for ``sc``, at its priority and every lower one: no zone it looks at has pages
    on its lists, nor reclaimable slab above the floor (the shrinker frees or defers work
    from any of it at priority 0, also without __GFP_FS: kernel/shrinker.py)."""
    can_swap = sc.can_swap(m)
    reclaim_idx = sc.reclaim_idx
    floor = m.slab_floor
    for zone in node.zones:
        if zone.idx > reclaim_idx:
            continue
        nr = zone.nr
        if nr["file"] + nr["dirty"] or (can_swap and nr["anon"] + nr["shmem"]):
            return False
        if nr["slab_reclaimable"] > floor[zone.gid]:
            return False
    return True
