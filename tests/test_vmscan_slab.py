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

from helpers import drive, events

from oomactors.config import Config
from oomactors.kernel import gfp as G
from oomactors.kernel.mmzone import ZONE_NORMAL

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
