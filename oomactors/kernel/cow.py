"""Copy-on-write anonymous memory after fork (mm/memory.c copy_present_pte, wp_page_copy;
kernel/fork.c dup_mmap, Linux 5.10).

dup_mmap gives the child a copy of every VMA (``total_vm`` is copied with them) and
copy_present_pte maps each present anonymous page of the parent into the child
write-protected, counting it in the child's MM_ANONPAGES.  A page is then counted in both
rss counters -- and so in both badness scores -- while it is one physical page, charged
once, to the memcg that faulted it.  The sharing ends when a side writes (wp_page_copy: a
new page for the writer) or unmaps it (the other side keeps the page).

The model keeps no pages, only counts: the child records, per zone, how many of the parent's
pages it still maps (``mm.cow`` against ``mm.cow_from``).  The pages stay physically the
parent's (its ``anon``, its LRU entry, its charge) and the child's counter adds
``cow_shared()``: the pages it maps that the parent still has.  When the parent's pages go
(exit, the oom_reaper) while a child still maps them, :func:`cow_release` hands them to the
child instead of freeing them, as the page's last mapping keeps it alive in the kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .memcontrol import boot_charge, uncharge_pages

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .task import MM


def copy_present_ptes(oldmm: "MM", mm: "MM") -> None:
    """dup_mmap's copy_page_range: the child maps every present anonymous page of the
    parent copy-on-write.  (Pages the parent itself still shares with its own parent are
    not passed on: a grandchild shares only what its parent holds.)"""
    mm.total_vm = oldmm.total_vm
    mm.cow = list(oldmm.anon)
    mm.cow_from = oldmm if any(mm.cow) else None


def wp_page_copy(mm: "MM", g: int, nr: int) -> int:
    """A write to ``nr`` shared pages in zone ``g`` got private copies (allocated by the
    caller): they are no longer shared.  Returns how many were shared."""
    k = min(nr, mm.cow_pages(g))
    mm.cow[g] -= k
    return k


def cow_release(m: "Machine", mm: "MM") -> None:
    """``mm`` is unmapping all its anonymous memory (exit, the oom_reaper): its own shares
    end, and pages a child still maps pass to that child instead of being freed."""
    mm.cow = [0] * len(mm.cow)
    mm.cow_from = None
    # the children in the order they were forked: m.mms is a set, iterated in no fixed order
    heirs = sorted((c for c in m.mms if c.cow_from is mm), key=lambda c: c.id)
    if not heirs:
        return
    heir = heirs[0]
    for zone in m.zones:
        g = zone.gid
        k = heir.cow_pages(g)
        if not k:
            continue
        # the page's last mapping is now the child's: it holds (and is charged for) it
        mm.anon[g] -= k
        if not mm.anon[g]:
            zone.anon_lru.pop(mm, None)
        heir.anon[g] += k
        heir.cow[g] -= k
        zone.anon_lru[heir] = None
        if heir.memcg is not mm.memcg:
            uncharge_pages(mm, k)
            boot_charge(heir.memcg, k)
    for c in heirs:
        c.cow_from = heir if c is not heir and any(c.cow) else None
    if any(heir.cow):
        heir.cow_from = None
        heir.cow = [0] * len(heir.cow)
