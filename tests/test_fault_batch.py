"""Faults that no scheduling point separates are made in one pass
(actors/fault.py fault_chunks_nowait, page_alloc.rmqueue_pcp_run).  That must be a pure
speed-up: the same events, and the same machine state at every event, as one fault at a
time."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import oomactors.actors.user as user
from oomactors.actors.fault import pages_due
from oomactors import sim
from oomactors.config import load_config, parse_config
from oomactors.kernel.mmzone import MAX_ORDER, Zone
from oomactors.kernel.page_alloc_pcp import pcp_requests
from oomactors.kernel.task import PAGE_SIZE, PTRS_PER_PTE
from oomactors.schedule import RandomScheduler


def _zone(free_area: list[int]) -> Zone:
    z = Zone.__new__(Zone)  # only the buddy lists and their count are used
    z.free_area = list(free_area)
    z.nr_free = sum(c << o for o, c in enumerate(free_area))
    return z


@settings(max_examples=400, deadline=None)
@given(free_area=st.lists(st.integers(0, 5), min_size=MAX_ORDER, max_size=MAX_ORDER),
       takes=st.lists(st.integers(0, 700), min_size=1, max_size=6))
def test_taking_in_pieces_leaves_the_lists_taking_once_would(free_area, takes):
    """rmqueue_pcp_run's refills come off the buddy lists in one take."""
    pieces, once = _zone(free_area), _zone(free_area)
    total = 0
    for n in takes:
        if not pieces.take_pages_bulk(n):
            break
        total += n
    assert once.take_pages_bulk(total)
    assert pieces.free_area == once.free_area and pieces.nr_free == once.nr_free


@given(elapsed=st.integers(0, 10_000), rate=st.integers(1, 1 << 34), hz=st.sampled_from((100, 250, 300, 1000)))
def test_pages_due_is_the_last_page_the_pace_test_lets_through(elapsed, rate, hz):
    due = pages_due(elapsed, rate, hz)
    assert due * PAGE_SIZE * hz // rate <= elapsed < (due + 1) * PAGE_SIZE * hz // rate


def _owner(mm) -> int:
    """The pid of the mm's owner (-1 once it has none: an exited task's shmem)."""
    return -1 if mm.owner is None else mm.owner.pid


def _state(m) -> tuple:
    """What the faults and reclaim touch, machine-wide."""
    return (tuple((tuple(z.free_area), z.nr_free, z.vm_free, tuple(z.nr.values()), tuple(_owner(mm) for mm in z.anon_lru),
                   tuple(_owner(mm) for mm in z.shmem_lru)) for z in m.zones),
            tuple((tuple(c.pcp), tuple(c.vm_diff)) for c in m.sched.cpus),
            tuple((t.pid, t.cpu_ns, t.cpu_debt_ns) for t in m.tasks.values()),
            tuple(sorted((_owner(mm), tuple(mm.anon), tuple(mm.shmem), tuple(mm.pgtables), mm.last_active,
                          mm.mmap_lock.readers) for mm in m.mms)),
            tuple(m.slab_deferred))  # the shrinker's carried-over work (kernel/shrinker.py)


def run_with_machine(cfg, seed: int, scheduler_seed: int | None, sink, box: dict, monkeypatch, **kw):
    """sim.run with ``sink``, and a random scheduler of ``scheduler_seed`` unless None; the
    machine is put in ``box["m"]`` as soon as it is built, so the sink can read its state."""
    real_build = sim.build

    def build(*a, **kw):
        box["m"] = real_build(*a, **kw)
        return box["m"]

    monkeypatch.setattr(sim, "build", build)
    sched = None if scheduler_seed is None else RandomScheduler(scheduler_seed, p=0.02, hz=cfg.kernel.hz)
    return sim.run(cfg, seed=seed, sinks=[sink], scheduler=sched, **kw)


def state_digest(cfg, seed: int, scheduler_seed: int | None, monkeypatch) -> str:
    """The digest of every event and of the machine's state at each event and at the end
    (tests/test_vmscan_empty.py uses it too)."""
    h = hashlib.sha256()
    box = {}

    def sink(rec):
        h.update(repr(rec).encode())
        m = box.get("m")
        if m is not None:
            h.update(repr(_state(m)).encode())

    r = run_with_machine(cfg, seed, scheduler_seed, sink, box, monkeypatch)
    m = box["m"]
    h.update(repr((_state(m), sorted(m.vmstat.items()), r.end_jiffies, r.decisions)).encode())
    return h.hexdigest()


def _digest(cfg, seed: int, scheduler_seed: int | None, batched: bool, monkeypatch) -> tuple[str, list[int]]:
    """:func:`state_digest`; and the faults made in batches.  Each time a batch says the
    next fault's first attempt fails (-1), that attempt is made and must fail (it then
    changes nothing, so the digest stays comparable)."""
    made = [0, 0]
    real = user.fault_chunks_nowait

    def counted(m, task, mm, nr, kind, gfp_mask, *rest):
        k = real(m, task, mm, nr, kind, gfp_mask, *rest)
        if k < 0:
            assert user.fault_pages_nowait(m, task, mm, nr, 0, kind, gfp_mask) is user.FAST_FAILED
            made[1] += 1
        else:
            made[0] += k
        return k

    monkeypatch.setattr(user, "fault_chunks_nowait", counted if batched else (lambda *a: 0))
    digest = state_digest(cfg, seed, scheduler_seed, monkeypatch)
    monkeypatch.undo()
    return digest, made


ODD = """
[machine]
cpus = 3
memory = "256MiB"
swap = "32MiB"
[run]
duration = "3s"
[[tasks]]
name = "odd"
count = 3
program = [ { op = "repeat", steps = [
  { op = "alloc", size = "1000KiB", chunk = 7 },
  { op = "alloc", size = "300KiB", kind = "shmem", chunk = 5, rate = "20MiB/s" },
  { op = "alloc", size = "64KiB", kind = "kernel", gfp = "GFP_KERNEL" },
  { op = "compute", time = "1ms" },
  { op = "free", size = "600KiB" } ] } ]
[[tasks]]
name = "big"
program = [ { op = "alloc", size = "200MiB", chunk = 600 } ]
"""


@pytest.mark.parametrize("source,seed,sched", [
    ("configs/parallel-oom.toml", 0, None),
    ("configs/parallel-oom.toml", 1, 5),
    ("configs/quickstart.toml", 0, None),      # paced steps
    ("configs/memcg-max.toml", 0, None),       # charged faults never batch
    ("odd", 0, None),
    ("odd", 2, 3),
])
def test_batched_faults_change_nothing(source, seed, sched, monkeypatch):
    cfg = parse_config(ODD) if source == "odd" else load_config(source)
    batched, (made, failing) = _digest(cfg, seed, sched, True, monkeypatch)
    one_by_one, none = _digest(cfg, seed, sched, False, monkeypatch)
    assert none == [0, 0]
    assert batched == one_by_one
    if source != "configs/memcg-max.toml":
        assert made > 100  # the batches did happen
        assert failing > 100  # and so did the first attempts known to fail


@settings(max_examples=3000, deadline=None)
@given(nr=st.sampled_from((1, 7, 31, 32, 33, 64, 600)), limit=st.integers(0, 3000),
       batch=st.sampled_from((1, 31, 32, 63)), drift=st.sampled_from((0, 1, 32, 100)),
       have=st.integers(0, 200), diff=st.integers(-150, 150), vm_free=st.integers(0, 1 << 20),
       nr_free=st.integers(0, 1 << 20), floor=st.integers(0, 1 << 19),
       mapped=st.none() | st.integers(0, 1 << 20), pgtables=st.integers(0, 3000))
def test_steady_stretches_give_what_walking_every_request_gives(nr, limit, batch, drift, have, diff, vm_free,
                                                                nr_free, floor, mapped, pgtables):
    """pcp_requests jumps over runs of requests that each refill the per-CPU list and take
    exactly their own pages; the jump must leave every number as walking them does."""
    if mapped is not None:
        pgtables = min(pgtables, -(-mapped // PTRS_PER_PTE))  # no more page tables than the mappings need
    args = (nr, limit, have, diff, vm_free, nr_free, floor, batch, drift, mapped, pgtables)
    assert pcp_requests(*args, stretches=True) == pcp_requests(*args, stretches=False)


def test_a_fill_is_mostly_steady_stretches():
    """In the parallel-oom fill (32-page faults, batch 31) the jump does the work: one
    request in 16 (a page-table page) is walked, one jump covers the 15 between, and the
    watermark stops the run inside a jump as walking stops it."""
    import oomactors.kernel.page_alloc_pcp as pcp
    jumps = []
    real = pcp._stretch

    def stretch(n, *a):
        got = real(n, *a)
        jumps.append(got[0])
        return got

    args = (32, 10_000, 31, 0, 200_000 + 5, 1 << 20, 10_000, 31, 32, 5 * 512, 5)
    pcp._stretch = stretch
    try:
        fast = pcp_requests(*args, stretches=True)
    finally:
        pcp._stretch = real
    assert fast == pcp_requests(*args, stretches=False)
    done = fast[0]
    assert 5000 < done < 10_000  # the watermark ended it
    assert len(jumps) <= done // 16 + 2 and sum(jumps) > 0.9 * done
