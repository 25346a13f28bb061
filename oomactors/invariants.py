"""Invariant checkers that run after every event of a simulation.

Each checker is a callable ``check(machine, record)`` that raises
:class:`InvariantViolation` naming the event where the rule broke.

* :func:`page_conservation` -- every page of every zone is in exactly one place: a buddy
  free list (whose block counts must add up to ``nr_free``), a CPU's per-CPU list, or one
  owner counter; and the owners' own books (each mm's per-zone counters, the page-cache
  mappers, the swap slots) agree with the zones'.  With memory cgroups, each memcg's
  memory and swap counters equal the pages charged to its subtree (its mms' anon, shmem and
  mapped page cache, its unmapped page cache, its __GFP_ACCOUNT pages; its mms' swap
  entries), and usage stays within memory.max but for what force charges put past it.
* :func:`commit_accounting` -- Committed_AS equals the charges the live mms carry (their
  accounted mappings and shmem objects): every charge is given back exactly once, by
  munmap or exit_mmap, and a refused request leaves nothing behind.
* :class:`OomLockExclusion` -- ``oom_lock`` is a mutex: nobody acquires it while another
  task holds it, and only the holder releases it (read from the event stream alone).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .events import EVENT_ID
from .kernel.mmzone import OWNERS

if TYPE_CHECKING:  # pragma: no cover
    from .machine import Machine


class InvariantViolation(AssertionError):
    pass


def page_conservation(m: "Machine", rec: tuple) -> None:
    cpus = m.sched.cpus
    for z in m.zones:
        g = z.gid
        blocks = sum(c << o for o, c in enumerate(z.free_area))
        if blocks != z.nr_free:
            raise InvariantViolation(f"t={rec[0]} {z}: buddy blocks hold {blocks} pages, nr_free={z.nr_free}")
        pcp = sum(c.pcp[g] for c in cpus)
        owned = sum(z.nr[k] for k in OWNERS)
        if z.nr_free + pcp + owned != z.managed:
            raise InvariantViolation(
                f"t={rec[0]} {z}: free {z.nr_free} + pcp {pcp} + owned {owned} != managed {z.managed} "
                f"({dict(z.nr)})")
        if min(z.nr.values()) < 0 or z.nr_free < 0:
            raise InvariantViolation(f"t={rec[0]} {z}: a negative counter {dict(z.nr)}")
        for kind, attr in (("anon", "anon"), ("shmem", "shmem"), ("pagetables", "pgtables")):
            total = sum(getattr(mm, attr)[g] for mm in m.mms)
            if total != z.nr[kind]:
                raise InvariantViolation(f"t={rec[0]} {z}: mms hold {total} {kind} pages, zone says {z.nr[kind]}")
        if sum(z.file_owner.values()) != z.nr["file"]:
            raise InvariantViolation(f"t={rec[0]} {z}: page-cache mappers disagree with nr_file")
    swapped = sum(mm.swapents for mm in m.mms)
    if swapped + m.swap_free != m.total_swap_pages:
        raise InvariantViolation(f"t={rec[0]}: swap entries {swapped} + free {m.swap_free} != {m.total_swap_pages}")
    if len(getattr(m, "memcgs", ())) > 1:
        _memcg_conservation(m, rec)


def _memcg_conservation(m: "Machine", rec: tuple) -> None:
    from .kernel.memcontrol import for_each_mem_cgroup_tree
    memcgs = list(m.memcgs.values())
    mem = {c: c.kmem + sum(c.file) for c in memcgs}
    swap = dict.fromkeys(memcgs, 0)
    for mm in m.mms:
        c = mm.memcg
        if c is not None:
            mem[c] += sum(mm.anon) + sum(mm.shmem) + sum(mm.file)
            swap[c] += mm.swapents
    for z in m.zones:
        for c in memcgs:
            if c.file[z.gid] != (z.file_owner.get(c, 0) if not c.is_root else 0):
                raise InvariantViolation(f"t={rec[0]} {z}: {c} holds {c.file[z.gid]} unmapped page-cache "
                                         f"pages, the file LRU says {z.file_owner.get(c, 0)}")
    # children come after their parent in pre-order: sum the subtrees bottom-up
    for c in reversed(for_each_mem_cgroup_tree(m.root_mem_cgroup)):
        if c.memory.usage != mem[c] or c.swap.usage != swap[c]:
            raise InvariantViolation(f"t={rec[0]}: {c} charged memory {c.memory.usage} swap {c.swap.usage}, "
                                     f"its subtree holds {mem[c]} and {swap[c]} pages")
        if c.parent is not None:
            mem[c.parent] += mem[c]
            swap[c.parent] += swap[c]
            if c.memory.usage > c.memory.max + c.memory.forced:
                raise InvariantViolation(f"t={rec[0]}: {c} usage {c.memory.usage} above memory.max "
                                         f"{c.memory.max} without a force charge")
            if c.swap.usage > c.swap.max:
                raise InvariantViolation(f"t={rec[0]}: {c} swap {c.swap.usage} above swap.max {c.swap.max}")


def commit_accounting(m: "Machine", rec: tuple) -> None:
    carried = sum(mm.vm_accounted + mm.shmem_accounted for mm in m.mms)
    if carried != m.vm_committed_as or min((min(mm.vm_accounted, mm.shmem_accounted) for mm in m.mms),
                                           default=0) < 0:
        raise InvariantViolation(f"t={rec[0]}: Committed_AS {m.vm_committed_as} != {carried} "
                                 f"pages charged to live mms")


class OomLockExclusion:
    """Nobody takes oom_lock while someone holds it; only the holder lets it go."""

    def __init__(self) -> None:
        self.holder: int | None = None
        self._acq = EVENT_ID["sim:oom_lock_acquired"]
        self._rel = EVENT_ID["sim:oom_lock_released"]

    def __call__(self, m: "Machine", rec: tuple) -> None:
        eid = rec[1]
        if eid == self._acq:
            if self.holder is not None:
                raise InvariantViolation(f"t={rec[0]}: pid {rec[3]} acquired oom_lock held by pid {self.holder}")
            self.holder = rec[3]
        elif eid == self._rel:
            if self.holder != rec[3]:
                raise InvariantViolation(f"t={rec[0]}: pid {rec[3]} released oom_lock held by {self.holder}")
            self.holder = None


def default_checkers() -> list:
    return [page_conservation, commit_accounting, OomLockExclusion()]
