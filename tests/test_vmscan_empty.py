"""Direct reclaim's passes over nodes with nothing on their lists are made in a tight loop
(kernel/vmscan_empty.py).  That must be a pure speed-up: the same events, the same CPU time
charged at the same points, and the same machine state at every event, as shrink_node
making each of them."""

from __future__ import annotations

import pytest
from helpers import count_returns
from test_fault_batch import state_digest

from oomactors.config import load_config, parse_config
from oomactors.events import EVENT_ID
from oomactors.kernel import vmscan

PARALLEL = open("configs/parallel-oom.toml").read()
TWO_NODES = PARALLEL.replace("[machine]\n", "[machine]\nnodes = 2\n", 1)
# no page cache and no swap: the LRU lists are empty from the start, only the reclaimable
# slab (8 MiB, floor 2 MiB) gives reclaim anything to do until the shrinker drains it
SLAB_ONLY = PARALLEL.replace('page_cache = "32MiB"', 'page_cache = "0"', 1)
# the same hogs allocating GFP_NOFS: the superblock shrinker refuses to scan, so every pass
# over the empty lists only winds the deferred work up
SLAB_NOFS = SLAB_ONLY.replace('{ op = "alloc", size = "4MiB" }',
                              '{ op = "alloc", size = "4MiB", kind = "kernel", gfp = "GFP_NOFS" }', 1) \
                     .replace('duration = "10s"', 'duration = "1s"', 1)


def _digest(cfg, seed: int, scheduler_seed: int | None, fast: bool, monkeypatch) -> tuple[str, int]:
    """The events' and states' digest (tests/test_fault_batch.py); and the passes the
    tight loop made."""
    made = [0]
    real = vmscan.empty_passes

    def counted(m, cur, nodes, sc):
        prio = sc.priority
        done = real(m, cur, nodes, sc)
        made[0] += done + (prio - sc.priority) * len(nodes)
        return done

    monkeypatch.setattr(vmscan, "empty_passes", counted if fast else (lambda *a: 0))
    digest = state_digest(cfg, seed, scheduler_seed, monkeypatch)
    monkeypatch.undo()
    return digest, made[0]


@pytest.mark.parametrize("source,seed,sched", [
    ("configs/parallel-oom.toml", 0, None),
    ("configs/parallel-oom.toml", 1, 5),
    ("two-nodes", 0, None),                # rounds of two passes, cut short mid-round
    ("two-nodes", 1, 5),
    ("slab-only", 0, None),                # empty lists, slab above its floor
    ("slab-only", 1, 5),
    ("configs/memcg-low.toml", 0, None),   # protected memcgs: shrink_node's own walk
])
def test_empty_passes_change_nothing(source, seed, sched, monkeypatch):
    if source in ("two-nodes", "slab-only"):
        cfg = parse_config(TWO_NODES if source == "two-nodes" else SLAB_ONLY, f"<{source}>")
    else:
        cfg = load_config(source)
    fast, made = _digest(cfg, seed, sched, True, monkeypatch)
    slow, _ = _digest(cfg, seed, sched, False, monkeypatch)
    assert fast == slow
    if source != "configs/memcg-low.toml":
        assert made > 1000  # the tight loop did make most passes
    else:
        assert made == 0


@pytest.mark.parametrize("source", ["configs/parallel-oom.toml", "two-nodes"])
def test_empty_passes_handed_to_collecting_sinks_in_one_go(source, monkeypatch):
    """When every sink only collects (a list's or deque's append, as an explore run's kept
    records) and no checker reads the event, Machine.emit_charged hands a run of empty
    passes over at once; the records, the time charged and the state must be as one at a
    time."""
    from collections import deque

    from oomactors import machine, sim
    from test_fault_batch import _state

    cfg = parse_config(TWO_NODES, "<two nodes>") if source == "two-nodes" else load_config(source)
    real = machine._appends_only

    def outcome(fast: bool):
        used = [0]

        def appends_only(sinks):
            got = fast and real(sinks)
            used[0] += got
            return got

        monkeypatch.setattr(machine, "_appends_only", appends_only)
        tail = deque(maxlen=100)
        kills = []

        def check(m, rec):  # a checker of another kind: it must not stop the shortcut
            kills.append(rec)

        check.event_ids = frozenset({EVENT_ID["sim:oom_kill"]})
        r = sim.run(cfg, seed=1, keep_records=True, sinks=[tail.append], checkers=[check], env_checks=False)
        monkeypatch.undo()
        m = r.machine
        assert kills
        return (r.records, list(tail), kills, _state(m), sorted(m.vmstat.items()), m.nevents, r.end_jiffies), used[0]

    fast, used = outcome(True)
    slow, unused = outcome(False)
    assert used > 100 and unused == 0
    assert fast == slow


@pytest.mark.parametrize("source,seed,sched,least", [
    ("slab-only", 0, None, 150),   # the deferred work grows until a batch is due
    ("slab-only", 1, 5, 150),
    ("slab-nofs", 0, None, 2000),  # without __GFP_FS it only grows
    ("slab-nofs", 1, 5, 100),     # (this schedule reaches fewer)
])
def test_passes_where_the_shrinker_only_defers_change_nothing(source, seed, sched, least, monkeypatch):
    """Passes over empty lists with slab above the floor, while the shrinker's target stays
    under a batch (or it refuses): made in the tight loop, each with its nr_deferred
    arithmetic, they give the same events and the same state -- slab_deferred included --
    at every event as shrink_node making each of them."""
    from oomactors.kernel import vmscan_empty
    cfg = parse_config(SLAB_ONLY if source == "slab-only" else SLAB_NOFS, f"<{source}>")
    made = count_returns(monkeypatch, vmscan_empty, "_deferring_passes")
    fast, _ = _digest(cfg, seed, sched, True, monkeypatch)
    slow, _ = _digest(cfg, seed, sched, False, monkeypatch)
    assert fast == slow
    assert made[0] >= least


def test_a_node_with_slab_above_its_floor_is_not_empty():
    """Empty LRU lists are not enough: shrink_node still runs the shrinker, which frees or
    defers work (also without __GFP_FS) while the slab is above its floor."""
    from oomactors import sim
    from oomactors.kernel import gfp as G
    from oomactors.kernel.mmzone import DEF_PRIORITY
    from oomactors.kernel.vmscan import ScanControl
    from oomactors.kernel.vmscan_empty import _nothing_to_scan
    m = sim.build(parse_config(SLAB_ONLY, "<slab-only>"))
    node = m.zones[0].node
    assert not any(z.nr["file"] + z.nr["dirty"] for z in node.zones) and not m.swap_free
    slab = [z for z in node.zones if z.nr["slab_reclaimable"] > m.slab_floor[z.gid]]
    assert slab
    for gfp_mask in (G.GFP_KERNEL, G.GFP_NOFS):
        sc = ScanControl(gfp_mask, 0, 32, max(z.idx for z in node.zones), is_kswapd=False)
        sc.priority = DEF_PRIORITY
        assert not _nothing_to_scan(m, node, sc)
        # a reclaim_idx below the slab's zones does not see it
        sc.reclaim_idx = min(z.idx for z in slab) - 1
        assert _nothing_to_scan(m, node, sc)
    for z in slab:  # drained to the floor: nothing left for the shrinker to count
        z.nr["slab_reclaimable"] = m.slab_floor[z.gid]
    sc = ScanControl(G.GFP_KERNEL, 0, 32, max(z.idx for z in node.zones), is_kswapd=False)
    assert _nothing_to_scan(m, node, sc)
