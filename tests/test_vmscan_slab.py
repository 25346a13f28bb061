"""Slab shrinking on every reclaim pass, the 5.10 way (mm/vmscan.c, fs/super.c).

shrink_node_memcgs calls shrink_lruvec and then shrink_slab for every memcg it visits, so a
pass over a node whose LRU lists are empty still runs the shrinkers.  do_shrink_slab aims
at (freeable >> priority) * 4 / DEFAULT_SEEKS plus the work deferred by earlier passes,
scans only whole batches (or the whole cache), and defers the rest; the superblock
shrinker refuses to scan without __GFP_FS, which defers the work too.

The machines here have no page cache, no dirty pages and no swap, and all their
reclaimable slab in ZONE_NORMAL: every pass is the shrinker's alone.  The expected
figures are worked out by hand in the comments (pages stand for objects; a batch is 48
pages: kernel/shrinker.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from helpers import drive, events
from hypothesis import example, given
from hypothesis import strategies as st

from oomactors.config import Config
from oomactors.kernel import gfp as G
from oomactors.kernel.mmzone import ZONE_NORMAL
from oomactors.kernel.shrinker import SUPER_BATCH_PAGES, deferred_only, shrink_slab

IDLE = [{"op": "repeat", "steps": [{"op": "sleep", "time": "100ms"}]}]


def _machine(slab: str = "auto"):
    """1 GiB, no ZONE_DMA: the slab (auto: 8 MiB = 2048 pages, floor 512) is all in Normal."""
    from oomactors import sim
    from oomactors.actors.user import new_process
    cfg = Config.model_validate({
        "machine": {"cpus": 2, "memory": "1GiB", "swap": "0", "page_cache": "0", "dirty": "0",
                    "dma": "0", "slab_reclaimable": slab},
        "kernel": {"profile": "linux-5.10"},
        "run": {"duration": "1s", "seed": 0, "stop_when_idle": True},
        "tasks": [{"name": "a", "uid": 1000, "program": IDLE}],
    })
    m = sim.build(cfg)
    m.records = []
    m.sinks.append(m.records.append)
    [zone] = [z for z in m.zones if z.nr["slab_reclaimable"]]
    assert zone.idx == ZONE_NORMAL
    for z in m.zones:  # nothing on any list the global reclaim looks at
        assert not (z.nr["file"] or z.nr["dirty"] or z.nr["shmem"]) and not m.swap_free
    return m, zone, new_process(m, "kswapd0", 0, frozenset(), 0, kthread=True)


def _pass(m, kswapd, gfp_mask: int, priority: int) -> tuple[int, int]:
    """One direct-reclaim shrink_node pass; returns (slab pages dropped, pages freed)."""
    from oomactors.kernel.vmscan import ScanControl, shrink_node
    node = m.zones[0].node
    sc = ScanControl(gfp_mask, 0, 32, max(z.idx for z in node.zones), is_kswapd=False)
    sc.priority = priority
    slab = sum(z.nr["slab_reclaimable"] for z in m.zones)
    free = sum(z.nr_free for z in m.zones)
    reclaimed = m.vmstat["pgsteal_direct"]
    drive(shrink_node(m, kswapd, node, sc))
    dropped = slab - sum(z.nr["slab_reclaimable"] for z in m.zones)
    assert sc.nr_scanned == 0 and sc.nr_reclaimed == dropped
    assert m.vmstat["pgsteal_direct"] - reclaimed == dropped
    ev = events(m.records, "vmscan:mm_vmscan_node_reclaim")[-1]
    assert ev["nid"] == node.nid and ev["nr_scanned"] == 0 and ev["nr_reclaimed"] == dropped
    return dropped, sum(z.nr_free for z in m.zones) - free


def test_a_pass_over_empty_lists_shrinks_the_slab_by_whole_batches_and_defers_the_rest():
    m, zone, kswapd = _machine()
    # freeable 1536: at priority 10 the target is (1536 >> 10) * 2 = 2 pages, short of a
    # batch and of the cache: nothing is freed, the 2 pages are deferred
    assert _pass(m, kswapd, G.GFP_KERNEL, 10) == (0, 0)
    assert m.slab_deferred[zone.gid] == 2
    # priority 4: 2 deferred + (1536 >> 4) * 2 = 194, four batches of 48 (192 pages) are
    # scanned and freed, 2 deferred again
    assert _pass(m, kswapd, G.GFP_KERNEL, 4) == (192, 192)
    assert zone.nr["slab_reclaimable"] == 2048 - 192 and m.slab_deferred[zone.gid] == 2
    # there is no minimum: at the default priority a pass frees nothing, however often
    for _ in range(20):
        assert _pass(m, kswapd, G.GFP_KERNEL, 12) == (0, 0)
    assert m.slab_deferred[zone.gid] == 2


def test_without_gfp_fs_nothing_is_freed_and_the_work_winds_up_for_a_later_pass():
    m, zone, kswapd = _machine()
    # super_cache_scan refuses: the 192 pages' target of priority 4 is all deferred
    assert _pass(m, kswapd, G.GFP_NOFS, 4) == (0, 0)
    assert zone.nr["slab_reclaimable"] == 2048 and m.slab_deferred[zone.gid] == 192
    # a __GFP_FS pass at priority 10 adds 2: its target of 194 (under half the cache, the
    # cap for a small delta) is scanned in four batches
    assert _pass(m, kswapd, G.GFP_KERNEL, 10) == (192, 192)
    assert m.slab_deferred[zone.gid] == 2


def test_a_cache_smaller_than_a_batch_goes_all_at_once_when_the_target_covers_it():
    m, zone, kswapd = _machine("200KiB")  # 50 pages, floor 12: freeable 38 < 48
    # priority 3: (38 >> 3) * 2 = 8, capped at half the cache -- deferred
    # priority 2: 8 + 18 = 26 < 38 -- deferred
    # priority 1: 26 + 38 = 64 >= 38: one batch of 48 frees all 38, 16 deferred
    assert _pass(m, kswapd, G.GFP_KERNEL, 3) == (0, 0)
    assert _pass(m, kswapd, G.GFP_KERNEL, 2) == (0, 0)
    assert m.slab_deferred[zone.gid] == 26
    assert _pass(m, kswapd, G.GFP_KERNEL, 1) == (38, 38)
    assert zone.nr["slab_reclaimable"] == m.slab_floor[zone.gid] == 12
    assert m.slab_deferred[zone.gid] == 16
    # at the floor the shrinker counts nothing: the deferred work stays as it is
    assert _pass(m, kswapd, G.GFP_KERNEL, 0) == (0, 0)
    assert m.slab_deferred[zone.gid] == 16


def _agrees(deferred_only, deferred: int, freeable: int, priority: int, fs: bool) -> None:
    """``deferred_only`` tells a pass that frees nothing from one that frees, and gives
    the nr_deferred shrink_slab leaves, for one pass of shrink_slab itself."""
    gfp_mask = G.GFP_KERNEL if fs else G.GFP_NOFS
    zone = SimpleNamespace(gid=0, nr={"slab_reclaimable": 100 + freeable})
    freed_to_buddy = []
    m = SimpleNamespace(slab_floor=[100], slab_deferred=[deferred],
                        free_to_buddy=lambda cur, z, k: freed_to_buddy.append(k))
    got = deferred_only(deferred, freeable, priority, gfp_mask)
    freed = shrink_slab(m, None, zone, gfp_mask, priority)
    assert freed == sum(freed_to_buddy)
    if got is None:
        assert freed > 0
    else:
        assert freed == 0 and m.slab_deferred[0] == got and zone.nr["slab_reclaimable"] == 100 + freeable


@given(deferred=st.integers(0, 5000), freeable=st.integers(1, 100_000), priority=st.integers(0, 12),
       fs=st.booleans())
@example(deferred=SUPER_BATCH_PAGES, freeable=1536, priority=12, fs=True)      # exactly a batch
@example(deferred=SUPER_BATCH_PAGES - 1, freeable=1536, priority=12, fs=True)  # one short of it
@example(deferred=19, freeable=38, priority=2, fs=True)   # 19 + 18: one short of the whole cache
@example(deferred=20, freeable=38, priority=2, fs=True)   # the whole cache (a batch is more)
@example(deferred=38, freeable=38, priority=12, fs=True)  # no fresh work: capped at half the cache
@example(deferred=0, freeable=1536, priority=6, fs=True)                       # fresh work of a batch
def test_deferred_only_is_shrink_slab_for_a_pass_that_frees_nothing(deferred, freeable, priority, fs):
    """kernel/vmscan_empty.py makes the passes that only defer with deferred_only's
    arithmetic: it must be shrink_slab's, to the page, on either side of every bound."""
    _agrees(deferred_only, deferred, freeable, priority, fs)


@pytest.mark.parametrize("deferred,freeable,priority", [(SUPER_BATCH_PAGES, 1536, 12), (20, 38, 2)])
def test_an_off_by_one_at_a_bound_is_caught(deferred, freeable, priority):
    """The property above sees a bound moved by one (a target of exactly a batch, or of
    exactly the whole cache, taken as too small to scan)."""
    def off_by_one(d, f, p, gfp_mask):  # one page short of the bound: it would not scan
        got = deferred_only(d - 1, f, p, gfp_mask)
        return None if got is None else got + 1

    _agrees(deferred_only, deferred, freeable, priority, True)  # the bound itself scans
    assert deferred_only(deferred, freeable, priority, G.GFP_KERNEL) is None

    with pytest.raises(AssertionError):
        _agrees(off_by_one, deferred, freeable, priority, True)
