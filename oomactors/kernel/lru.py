"""The active and inactive LRU lists, counted per owner (mm/swap.c, mm/vmscan.c, 5.10).

The kernel keeps four LRU lists per lruvec -- inactive and active, anon and file -- and ages
pages across them:

* a page enters the **inactive** list (5.9+: anon too, ``lru_cache_add_inactive_or_unevictable``);
* an access sets its referenced state (the PTE's young bit for a mapped page; PG_referenced
  through ``mark_page_accessed`` for a read page cache page, whose second access activates);
* ``shrink_page_list`` looks at inactive pages from the tail: ``page_check_references``
  **activates** a referenced anon page, keeps a referenced mapped file page for another
  round, and reclaims the rest (an unmapped page cache page referenced once is reclaimed);
* ``shrink_active_list`` moves pages from the active tail back to the inactive list,
  consuming their references and marking them PG_workingset -- it runs only while
  ``inactive_is_low`` (or when refaults show a new working set, see vmscan), so the active
  list holds what is used again and the inactive list is the probation area.

The model does not track pages one by one.  Each zone keeps, per LRU owner (an mm for anon
and mapped page cache, a memcg or None for unmapped page cache), how many of the owner's
resident pages in that zone are **active**, how many inactive ones are **referenced**, and how
many inactive ones carry **PG_workingset** (were active before).  Totals are the owner's
existing counters (``mm.anon[g]``, ``zone.file_owner[owner]``); pages freed elsewhere (exit,
munmap, the reaper) leave the inactive part first -- the counts here are clamped to the
totals when read.  Accesses and scans spread over an owner's pages in proportion to these
counts: which particular pages are hit is not known, their share is.
"""

from __future__ import annotations

from math import isqrt
from typing import TYPE_CHECKING, Any

from .task import MM

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .mmzone import Zone

ANON, FILE = "anon", "file"
KINDS = (ANON, FILE)


class ZoneLru:
    """The aging state of one zone's pages: per kind, per owner (oldest entry first)."""

    __slots__ = ("active", "ref", "wsf")

    def __init__(self) -> None:
        self.active: dict[str, dict[Any, int]] = {ANON: {}, FILE: {}}  # activation order
        self.ref: dict[str, dict[Any, int]] = {ANON: {}, FILE: {}}     # inactive, referenced
        self.wsf: dict[str, dict[Any, int]] = {ANON: {}, FILE: {}}     # inactive, PG_workingset


def owner_pages(zone: "Zone", kind: str, owner: Any) -> int:
    """The owner's resident pages of ``kind`` in the zone."""
    if kind == ANON:
        return owner.anon[zone.gid]
    return zone.file_owner.get(owner, 0)


def _get(d: dict[Any, int], owner: Any, cap: int) -> int:
    v = d.get(owner, 0)
    if v > cap:
        v = cap
        if v:
            d[owner] = v
        else:
            del d[owner]
    return v


def _add(d: dict[Any, int], owner: Any, n: int) -> None:
    v = d.get(owner, 0) + n
    if v > 0:
        d[owner] = v
    else:
        d.pop(owner, None)


def state(zone: "Zone", kind: str, owner: Any) -> tuple[int, int, int, int]:
    """(total, active, inactive referenced, inactive PG_workingset) of an owner, clamped."""
    lru = zone.lru
    total = owner_pages(zone, kind, owner)
    a = _get(lru.active[kind], owner, total)
    r = _get(lru.ref[kind], owner, total - a)
    w = _get(lru.wsf[kind], owner, total - a)
    return total, a, r, w


def nr_active(zone: "Zone", kind: str) -> int:
    """NR_ACTIVE_ANON / NR_ACTIVE_FILE of the zone (owners whose pages left are dropped)."""
    d = zone.lru.active[kind]
    if not d:
        return 0
    total = 0
    for owner in list(d):
        total += _get(d, owner, owner_pages(zone, kind, owner))
    return total


def lru_sizes(zone: "Zone") -> tuple[int, int, int, int]:
    """(inactive anon, active anon, inactive file, active file) of the zone.  Dirty page
    cache (kept by no owner in the model) is on the inactive file list."""
    nr = zone.nr
    aa = nr_active(zone, ANON)
    af = nr_active(zone, FILE)
    return nr["anon"] - aa, aa, nr["file"] + nr["dirty"] - af, af


def inactive_is_low(inactive: int, active: int) -> bool:
    """inactive_is_low: the inactive list should be at least active / sqrt(10 * GiB) big
    (1:1 below 1 GiB of the list pair, 1:3 at 1 GiB, 1:10 at 10 GiB)."""
    gb = (inactive + active) >> (30 - 12)
    ratio = isqrt(10 * gb) if gb else 1  # int_sqrt
    return inactive * ratio < active


# --- the nonresident age clock (mm/workingset.c) ---------------------------------------
def workingset_age_nonresident(m: "Machine", zone: "Zone", nr: int) -> None:
    """Advance the node's lruvec->nonresident_age by ``nr`` evictions or activations."""
    m.nonresident_age[zone.node.nid] += nr


# --- accesses ----------------------------------------------------------------------------
def _spread(n: int, parts: list[int]) -> list[int]:
    """Split ``n`` in proportion to ``parts`` (largest remainders; sums to n if parts do)."""
    tot = sum(parts)
    if not tot or not n:
        return [0] * len(parts)
    n = min(n, tot)
    out = [n * p // tot for p in parts]
    rest = n - sum(out)
    order = sorted(range(len(parts)), key=lambda i: (-(n * parts[i] % tot), i))
    for i in order[:rest]:
        out[i] += 1
    return out


def mark_accessed(m: "Machine", zone: "Zone", kind: str, owner: Any, n: int) -> int:
    """``n`` resident pages of ``owner`` in ``zone`` were accessed.  Inactive ones become
    referenced; a page cache page that already was is activated (mark_page_accessed).
    Active pages only get their young bit, which shrink_active_list ignores (5.10 keeps
    only executable file pages active).  Returns how many pages were activated."""
    total, a, r, w = state(zone, kind, owner)
    if not total or n <= 0:
        return 0
    hit_active, hit_ref, hit_unref = _spread(min(n, total), [a, r, total - a - r])
    lru = zone.lru
    activated = 0
    if kind == FILE and hit_ref:
        activated = hit_ref
        _move_to_active(m, zone, kind, owner, hit_ref, r, w, total - a)
        m.vmstat["pgactivate"] += hit_ref
        workingset_age_nonresident(m, zone, hit_ref)  # workingset_activation
    if hit_unref:
        _add(lru.ref[kind], owner, hit_unref)
    return activated


def _move_to_active(m: "Machine", zone: "Zone", kind: str, owner: Any, n: int, r: int, w: int,
                    inactive: int) -> None:
    """``n`` referenced inactive pages move to the active list (the tail: newest)."""
    lru = zone.lru
    _add(lru.ref[kind], owner, -min(n, r))
    if w:
        _add(lru.wsf[kind], owner, -(n * w // inactive if inactive else 0))
    d = lru.active[kind]
    v = d.pop(owner, 0) + n
    d[owner] = v


def add_new(zone: "Zone", kind: str, owner: Any, n: int, *, active: bool, referenced: bool) -> None:
    """Pages just charged to ``owner`` (counted in its total already) join a list: active
    (a refault within the working set) or inactive, referenced when the access that brought
    them in left the young bit / PG_referenced set."""
    lru = zone.lru
    if active:
        d = lru.active[kind]
        d[owner] = d.pop(owner, 0) + n
    elif referenced:
        _add(lru.ref[kind], owner, n)


# --- reclaim -----------------------------------------------------------------------------
def scan_inactive(m: "Machine", zone: "Zone", kind: str, owner: Any, nr_scan: int) -> tuple[int, int, int]:
    """shrink_page_list over up to ``nr_scan`` inactive pages of ``owner``:
    page_check_references for each share.  Returns (pages scanned, pages to reclaim, of
    which PG_workingset).

    A referenced anon page is activated; a referenced mapped file page is kept for another
    round (its young bit cleared); an unmapped page cache page referenced once is reclaimed
    (PAGEREF_RECLAIM_CLEAN)."""
    total, a, r, w = state(zone, kind, owner)
    inactive = total - a
    nr_scan = min(nr_scan, inactive)
    if nr_scan <= 0:
        return 0, 0, 0
    referenced = min(r, -(-nr_scan * r // inactive)) if r else 0
    lru = zone.lru
    if referenced and kind == ANON:
        _move_to_active(m, zone, kind, owner, referenced, r, w, inactive)
        m.vmstat["pgactivate"] += referenced
        workingset_age_nonresident(m, zone, referenced)  # move_pages_to_lru ages on activation
        reclaim = nr_scan - referenced
    elif referenced and isinstance(owner, MM):
        _add(lru.ref[kind], owner, -referenced)            # PAGEREF_KEEP: rotated
        reclaim = nr_scan - referenced
    else:
        if referenced:
            _add(lru.ref[kind], owner, -referenced)
        reclaim = nr_scan
    if not reclaim:
        return nr_scan, 0, 0
    total, a, r, w = state(zone, kind, owner)
    unref = total - a - r
    reclaim = min(reclaim, unref) if kind == ANON else min(reclaim, total - a)
    ws = _spread(reclaim, [w, max(0, total - a - w)])[0] if w else 0
    if ws:
        _add(lru.wsf[kind], owner, -ws)
    return nr_scan, reclaim, ws


def shrink_active_list(m: "Machine", zone: "Zone", kind: str, nr_to_scan: int,
                       memcg_of: Any = None, memcg: Any = None) -> int:
    """Deactivate up to ``nr_to_scan`` pages from the active list's tail (oldest activation
    first; with ``memcg_of``, only owners charged to ``memcg``: its own lruvec).  Their
    references are consumed (page_referenced clears the young bits) and they are marked
    PG_workingset.  Returns how many moved."""
    lru = zone.lru
    d = lru.active[kind]
    moved = 0
    for owner in list(d):
        if moved >= nr_to_scan:
            break
        if memcg_of is not None and memcg_of(owner) is not memcg:
            continue
        total = owner_pages(zone, kind, owner)
        a = _get(d, owner, total)
        k = min(a, nr_to_scan - moved)
        if not k:
            continue
        _add(d, owner, -k)
        _add(lru.wsf[kind], owner, k)
        moved += k
    if moved:
        m.vmstat["pgdeactivate"] += moved
    return moved
