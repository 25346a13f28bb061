"""Workingset detection: shadow entries, refault distance and activation (mm/workingset.c, 5.10).

When reclaim evicts a page, the kernel leaves a *shadow entry* where the page was (the
file's page cache, or the swap cache for anon, 5.9+).  The shadow records the lruvec's
``nonresident_age`` at eviction -- a clock that advances by one for every eviction and
every activation -- and whether the page was part of the working set (PG_workingset: it
had been active).  When the page is faulted back in, the *refault distance* is the age
now minus the age in the shadow: how many pages were evicted or activated meanwhile, i.e.
how much more memory the page would have needed to stay resident.  ``workingset_refault``
counts every refault (``workingset_refault_anon``/``_file``) and, if the distance is at most
the memory the working set could have had --

* for page cache: the active file list, plus both anon lists while swap has room;
* for anon: the active anon list plus both file lists --

activates the page at once (``workingset_activate_*``) and ages the clock; if the shadow
said it had been in the working set, it sets PG_workingset again and counts
``workingset_restore_*``.  Reading such a page back is *thrashing*: the task's wait for
the read counts as a memory stall in PSI (the caller does that, see kernel/memory.py).

The model's pages have no addresses.  Shadows are kept per owner (the mm for anon and
mapped page cache; a memcg or None for unmapped page cache) as batches of
``[workingset pages, other pages, node, age]`` in eviction order; a refault takes the oldest batches
first (what a task sweeping its working set again reaches first).  The age clock and the
list sizes are the node's -- the root lruvec -- also for pages a memcg evicted (the kernel
uses the evicting memcg's lruvec; see docs/thrashing.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .lru import lru_sizes
from .memcontrol import memcg_of

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .mmzone import Zone

MAX_BATCHES = 256  # shadow batches kept per owner; older ones merge (the age of the newer)


def workingset_eviction(m: "Machine", owner: Any, nr: int, zone: "Zone", workingset: int = 0,
                        kind: str = "file") -> None:
    """``nr`` pages of ``owner`` were evicted from ``zone`` (``workingset`` of them had
    PG_workingset): they leave shadows stamped with the node's age."""
    if nr <= 0:
        return
    key = owner if kind == "file" else (kind, owner)
    shadows = m.workingset_shadows.setdefault(key, [])
    nid = zone.node.nid
    ages = m.nonresident_age
    ages[nid] += nr
    shadows.append([workingset, nr - workingset, nid, ages[nid]])
    if len(shadows) > MAX_BATCHES:
        a = shadows.pop(0)  # the oldest two become one, stamped with the newer age
        shadows[0][0] += a[0]
        shadows[0][1] += a[1]


def drop_shadows(m: "Machine", owner: Any, nr: int, kind: str = "anon") -> None:
    """Shadows whose swap entries were freed go with them (newest first: the order does not
    matter to anyone afterwards)."""
    key = owner if kind == "file" else (kind, owner)
    shadows = m.workingset_shadows.get(key)
    while shadows and nr > 0:
        b = shadows[-1]
        for i in (1, 0):
            k = min(b[i], nr)
            b[i] -= k
            nr -= k
        if not b[0] + b[1]:
            shadows.pop()
    if shadows is not None and not shadows:
        del m.workingset_shadows[key]


def memcg_count_refaults(m: "Machine", memcg: Any, kind: str, nr: int) -> None:
    """memory.stat's workingset_refault_anon/_file of the memcg the refaulting page is
    charged to and of every ancestor below the root (whose figures are /proc/vmstat's)."""
    counts = m.memcg_refaults
    i = 0 if kind == "anon" else 1
    c = memcg
    while nr and c is not None and not c.is_root:
        counts.setdefault(c, [0, 0])[i] += nr
        c = c.parent


def forget_mm(m: "Machine", mm: Any) -> None:
    """An address space is gone: its swap entries (and their shadows) are freed, and no
    one can fault its mapped page cache back through it any more."""
    m.workingset_shadows.pop(("anon", mm), None)
    m.workingset_shadows.pop(mm, None)


def workingset_size(m: "Machine", nid: int, file: bool) -> int:
    """The memory the refaulting page competed with on its node (see the module docstring)."""
    ia = aa = i_f = af = 0
    for z in m.nodes[nid].zones:
        s = lru_sizes(z)
        ia += s[0]
        aa += s[1]
        i_f += s[2]
        af += s[3]
    size = af
    if not file:
        size += i_f
    if m.swap_free > 0:
        size += aa
        if file:
            size += ia
    return size


def workingset_refault(m: "Machine", owner: Any, nr: int, kind: str = "file") -> tuple[int, int, int]:
    """``owner`` faulted ``nr`` pages of ``kind`` back in: those that find a shadow are
    refaults.  Returns (refaults, activated, restored): the activated pages go straight
    to the active list, the restored ones were in the working set when evicted."""
    key = owner if kind == "file" else (kind, owner)
    shadows = m.workingset_shadows.get(key)
    if not shadows or nr <= 0:
        return 0, 0, 0
    ages = m.nonresident_age
    file = kind == "file"
    refaults = activated = restored = 0
    sizes: dict[int, int] = {}
    while shadows and refaults < nr:
        b = shadows[0]
        ws, plain, nid, age = b
        k = min(ws + plain, nr - refaults)
        k_ws = k * ws // (ws + plain)  # which of the batch's pages come back is not known
        b[0] -= k_ws
        b[1] -= k - k_ws
        if not b[0] + b[1]:
            shadows.pop(0)
        refaults += k
        if nid not in sizes:
            sizes[nid] = workingset_size(m, nid, file)
        if ages[nid] - age <= sizes[nid]:
            activated += k
            ages[nid] += k
            restored += k_ws
    if not shadows:
        del m.workingset_shadows[key]
    memcg_count_refaults(m, memcg_of(owner), kind, refaults)
    v = m.vmstat
    v["workingset_refault_" + kind] += refaults
    v["workingset_activate_" + kind] += activated
    v["workingset_restore_" + kind] += restored
    return refaults, activated, restored
