"""Slab shrinking does not depend on the LRU lists (mm/vmscan.c of 5.10).

shrink_node_memcgs calls shrink_lruvec and then shrink_slab for every memcg it visits, so a
pass over a node whose LRU lists are empty still runs the shrinkers (the superblock
shrinker, fs/super.c super_cache_scan, itself gives up without __GFP_FS).
"""

from __future__ import annotations

from helpers import drive, events

from oomactors.config import Config
from oomactors.kernel import gfp as G
from oomactors.kernel.mmzone import DEF_PRIORITY

IDLE = [{"op": "repeat", "steps": [{"op": "sleep", "time": "100ms"}]}]


def _machine():
    """A built machine with no page cache, no dirty pages and no swap: every LRU list the
    global reclaim looks at is empty, the reclaimable slab (auto: memory/128) is not."""
    from oomactors import sim
    from oomactors.actors.user import new_process
    cfg = Config.model_validate({
        "machine": {"cpus": 2, "memory": "1GiB", "swap": "0", "page_cache": "0", "dirty": "0"},
        "kernel": {"profile": "linux-5.10"},
        "run": {"duration": "1s", "seed": 0, "stop_when_idle": True},
        "tasks": [{"name": "a", "uid": 1000, "program": IDLE}],
    })
    m = sim.build(cfg)
    m.records = []
    m.sinks.append(m.records.append)
    return m, new_process(m, "kswapd0", 0, frozenset(), 0, kthread=True)


def _pass(m, kswapd, gfp_mask: int):
    from oomactors.kernel.vmscan import ScanControl, shrink_node
    node = m.zones[0].node
    sc = ScanControl(gfp_mask, 0, 32, max(z.idx for z in node.zones), is_kswapd=False)
    sc.priority = DEF_PRIORITY - 2
    before = {z.gid: z.nr["slab_reclaimable"] for z in node.zones}
    free = sum(z.nr_free for z in node.zones)
    drive(shrink_node(m, kswapd, node, sc))
    after = {z.gid: z.nr["slab_reclaimable"] for z in node.zones}
    return node, sc, before, after, sum(z.nr_free for z in node.zones) - free


def test_a_pass_over_empty_lru_lists_still_shrinks_the_reclaimable_slab():
    m, kswapd = _machine()
    node, sc, before, after, freed = _pass(m, kswapd, G.GFP_KERNEL)
    slab_zones = [z for z in node.zones if before[z.gid] > m.slab_floor[z.gid]]
    assert slab_zones
    for z in slab_zones:
        # nothing to scan on the lists, and no swap: the pass is the shrinkers' alone
        assert not (z.nr["file"] or z.nr["dirty"] or z.nr["shmem"])
        # (freeable >> priority) * 2, freeable above the floor kept for the busy caches
        freeable = before[z.gid] - m.slab_floor[z.gid]
        assert before[z.gid] - after[z.gid] == min(freeable, max(1, (freeable >> sc.priority) * 2))
    dropped = sum(before.values()) - sum(after.values())
    assert dropped > 0 and freed == dropped
    assert sc.nr_scanned == 0 and sc.nr_reclaimed == dropped
    [ev] = events(m.records, "vmscan:mm_vmscan_node_reclaim")
    assert ev["nid"] == node.nid and ev["nr_scanned"] == 0 and ev["nr_reclaimed"] == dropped
    assert m.vmstat["pgsteal_direct"] == dropped


def test_without_gfp_fs_the_shrinkers_leave_the_slab_alone():
    m, kswapd = _machine()
    _, sc, before, after, freed = _pass(m, kswapd, G.GFP_NOFS)
    assert before == after and freed == 0 and sc.nr_reclaimed == 0
    [ev] = events(m.records, "vmscan:mm_vmscan_node_reclaim")
    assert ev["nr_reclaimed"] == 0
