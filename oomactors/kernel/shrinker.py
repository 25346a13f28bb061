"""The superblock shrinker's share of a reclaim pass (mm/vmscan.c do_shrink_slab, 5.10).

The reclaimable slab (``slab_reclaimable``: the dentry and inode caches) is a page count
per zone; the quarter of it present at boot is a floor that stands for objects in use
(not on the shrinker's LRU).  Each zone keeps its own carried-over work
(``Machine.slab_deferred``, the shrinker's ``nr_deferred``).  Pages stand for the
shrinker's objects in all of 5.10's arithmetic:

* the target is ``(freeable >> priority) * 4 / DEFAULT_SEEKS`` plus the deferred work;
  when that target is small against the cache (under a quarter of it), the deferred part
  may lift the scan to half the cache at most, and never past twice the cache;
* nothing is scanned unless the target reaches a whole batch or the whole cache; it is
  scanned a batch at a time;
* what was not scanned is deferred to the next pass -- also when the scan could not run
  at all: without ``__GFP_FS`` the superblock shrinker refuses (``super_cache_scan``),
  so GFP_NOFS reclaim winds the deferred work up, as in 5.10.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import gfp as G

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .mmzone import Zone
    from .task import Task

DEFAULT_SEEKS = 2
# The superblock shrinker scans 1024 objects a batch (alloc_super sets s_shrink.batch; the
# default SHRINK_BATCH of 128 is for shrinkers that set none).  Counted in pages as
# dentries (192 bytes on x86-64), that is 48 pages.
SUPER_BATCH_PAGES = 1024 * 192 // 4096
_GFP_FS = G.__GFP_FS  # (a class body would mangle the name)


def shrink_slab(m: "Machine", cur: "Task", zone: "Zone", gfp_mask: int, priority: int) -> int:
    """Shrink ``zone``'s reclaimable slab for one reclaim pass at ``priority``; returns the
    pages freed (to the buddy allocator).  Call only with slab above the floor."""
    g = zone.gid
    nr = zone.nr
    freeable = nr["slab_reclaimable"] - m.slab_floor[g]
    total_scan, next_deferred = scan_target(m.slab_deferred[g], freeable, priority)
    scanned = 0
    if gfp_mask & _GFP_FS:
        while total_scan >= SUPER_BATCH_PAGES or total_scan >= freeable:
            batch = min(SUPER_BATCH_PAGES, total_scan)
            total_scan -= batch
            scanned += batch
    m.slab_deferred[g] = max(next_deferred - scanned, 0)
    freed = min(scanned, freeable)
    if freed:
        nr["slab_reclaimable"] -= freed
        m.free_to_buddy(cur, zone, freed)
    return freed


def scan_target(deferred: int, freeable: int, priority: int) -> tuple[int, int]:
    """do_shrink_slab's (total_scan, next_deferred) before the scan: this pass's fresh
    work plus the deferred, bounded against windup."""
    delta = (freeable >> priority) * 4 // DEFAULT_SEEKS
    total_scan = deferred + delta
    next_deferred = total_scan
    if delta < freeable // 4:
        total_scan = min(total_scan, freeable // 2)  # no windup empties the whole cache
    return min(total_scan, freeable * 2), next_deferred


def deferred_only(deferred: int, freeable: int, priority: int, gfp_mask: int) -> int | None:
    """The zone's nr_deferred after a pass at ``priority`` that scans nothing (its target
    is under a batch and under the cache, or the shrinker refuses without __GFP_FS), or
    None if the pass would scan -- and free -- something.  Such a pass frees nothing and
    changes nothing else: :func:`shrink_slab` made without its frame
    (kernel/vmscan_empty.py)."""
    total_scan, next_deferred = scan_target(deferred, freeable, priority)
    if gfp_mask & _GFP_FS and (total_scan >= SUPER_BATCH_PAGES or total_scan >= freeable):
        return None
    return next_deferred
