"""Direct reclaim's passes over nodes with nothing on their lists are made in a tight loop
(kernel/vmscan_empty.py).  That must be a pure speed-up: the same events, the same CPU time
charged at the same points, and the same machine state at every event, as shrink_node
making each of them."""

from __future__ import annotations

import pytest
from test_fault_batch import state_digest

from oomactors.config import load_config, parse_config
from oomactors.kernel import vmscan

TWO_NODES = open("configs/parallel-oom.toml").read().replace("[machine]\n", "[machine]\nnodes = 2\n", 1)


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
    ("configs/memcg-low.toml", 0, None),   # protected memcgs: shrink_node's own walk
])
def test_empty_passes_change_nothing(source, seed, sched, monkeypatch):
    cfg = parse_config(TWO_NODES, "<two nodes>") if source == "two-nodes" else load_config(source)
    fast, made = _digest(cfg, seed, sched, True, monkeypatch)
    slow, _ = _digest(cfg, seed, sched, False, monkeypatch)
    assert fast == slow
    if source != "configs/memcg-low.toml":
        assert made > 1000  # the tight loop did make most passes
    else:
        assert made == 0
