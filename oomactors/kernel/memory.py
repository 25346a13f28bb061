"""Faulting evicted memory back in: swap-in and page-cache refaults (mm/memory.c do_swap_page,
mm/swap_state.c, mm/page_io.c swap_readpage, mm/filemap.c filemap_fault, 5.10).

Both paths run after the new page was allocated and charged (the caller's fault loop, which
reclaims and OOMs like any fault):

* **swap-in** (``do_swap_page`` -> ``swapin_readahead`` -> ``__read_swap_cache_async``): the
  shadow left in the swap cache goes through ``workingset_refault``; the page joins the LRU
  (active if the refault distance says it belongs to the working set); ``swap_readpage``
  reads it from the swap device, and the task waits for the read.  The swap entry is freed
  once the page is mapped (5.10 keeps the swap cache copy only while swap is less than
  half full; the model always frees it) -- ``pswpin`` and ``pgmajfault`` count it;
* **page-cache refault** (``filemap_fault`` / ``page_cache_read``): the shadow in the file's
  page cache goes through ``workingset_refault`` the same way, and the task waits for the
  read at the disk's bandwidth (the machine's writeback device: one disk).

A task waiting for a page that was in the working set when it was evicted (PG_workingset)
is thrashing: 5.10 wraps that wait in ``psi_memstall_enter``/``_leave`` (``swap_readpage``
for anon; ``wait_on_page_bit_common`` on a !Uptodate workingset page, and ``submit_bio``
for BIO_WORKINGSET reads, for page cache), so it shows in ``some`` and -- when no other task
of the group is running -- in ``full`` memory pressure.  Other IO waits are not memory
stalls (PSI counts them as IO pressure, which the model does not keep).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .lru import ANON, FILE, add_new, mark_accessed
from .memcontrol import uncharge_swap
from .workingset import workingset_refault
from ..psi import psi_memstall_enter, psi_memstall_leave

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import IODevice, Machine
    from .mmzone import Zone
    from .task import MM, Task


def _join_lru(zone: "Zone", kind: str, owner: Any, nr: int, activated: int) -> None:
    """The faulted pages enter the LRU: refaults within the working set on the active list,
    the rest inactive and referenced (the access that faulted them)."""
    if activated:
        add_new(zone, kind, owner, activated, active=True, referenced=True)
    if nr - activated:
        add_new(zone, kind, owner, nr - activated, active=False, referenced=True)


def do_swap_page(m: "Machine", cur: "Task", mm: "MM", zone: "Zone", nr: int) -> tuple[int, int, int]:
    """``nr`` swapped-out pages of ``mm`` were read into freshly charged pages in ``zone``:
    their shadows are evaluated and their swap entries freed.  Returns the refault
    figures (refaults, activated, restored) of workingset_refault."""
    refaults, activated, restored = workingset_refault(m, mm, nr, ANON)
    _join_lru(zone, ANON, mm, nr, activated)
    mm.swapents -= nr
    m.swap_free += nr
    uncharge_swap(mm, nr)
    m.vmstat["pswpin"] += nr
    m.vmstat["pgmajfault"] += nr
    return refaults, activated, restored


def filemap_refault(m: "Machine", cur: "Task", owner: Any, zone: "Zone", nr: int) -> tuple[int, int, int]:
    """``nr`` page-cache pages of ``owner`` were read back into ``zone`` (read from disk:
    a major fault whether or not a shadow was left)."""
    refaults, activated, restored = workingset_refault(m, owner, nr, FILE)
    _join_lru(zone, FILE, owner, nr, activated)
    m.vmstat["pgmajfault"] += nr
    return refaults, activated, restored


def filemap_read(m: "Machine", cur: "Task", owner: Any, zone: "Zone", nr: int) -> None:
    """``nr`` page-cache pages of ``owner`` read for the first time: a major fault, no
    shadow to look at (page_cache_read of a page nobody evicted)."""
    _join_lru(zone, FILE, owner, nr, 0)
    m.vmstat["pgmajfault"] += nr


async def wait_on_read(m: "Machine", cur: "Task", device: "IODevice", nr: int, why: str,
                       thrashing: bool) -> int:
    """Submit a read of ``nr`` pages to ``device`` and sleep (uninterruptible) until it
    completes; a read of working-set pages is a memory stall.  Returns the jiffies waited."""
    done = device.submit(m.now, nr)
    wait = done - m.now
    m.emit("sim:io_wait", cur.pid, nr, wait, why)
    pflags = psi_memstall_enter(m, cur) if thrashing else True
    try:
        await m.sched.sleep(cur, wait, "fault.io_wait")
    finally:
        psi_memstall_leave(m, cur, pflags)
    return wait


def mark_resident_accessed(m: "Machine", kind: str, owner: Any, nr: int) -> int:
    """An access to ``nr`` resident pages of ``owner``, spread over the zones it has pages
    in (kernel/lru.py).  Returns the pages activated."""
    counts = [(z, owner.anon[z.gid] if kind == ANON else z.file_owner.get(owner, 0)) for z in m.zones]
    counts = [(z, c) for z, c in counts if c]
    total = sum(c for _, c in counts)
    if not total or nr <= 0:
        return 0
    nr = min(nr, total)
    activated = 0
    left = nr
    for i, (z, c) in enumerate(counts):
        k = left if i == len(counts) - 1 else min(left, -(-nr * c // total))
        if k:
            activated += mark_accessed(m, z, kind, owner, k)
            left -= k
    return activated
