"""The same seed gives the same trace bytes in any process; different seeds interleave
differently.  A pinned hash catches a dependency upgrade that changes scheduling."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from oomactors import sim
from oomactors.config import load_config, load_default
from oomactors.events import EVENT_ID
from oomactors.trace.header import provenance
from oomactors.trace.stream import TraceWriter

ROOT = Path(__file__).resolve().parent.parent

# sha256 of the trace of the default config at seed 3, as `oomactors run --trace` writes it
# (its header names the oomactors version; update only for a deliberate model change, a
# release, or a trace format change).  Last re-pinned when the session's branches met: the
# actors' own stepper (interleaving), ZONE_DMA and fork's kernel memory (the machine),
# the checksummed trace format 2 (framing) and the new events (idle sched_switch,
# sim:zoneinfo, kmem:rss_stat, compaction's try_to_compact_pages).  Then: the OOM report's
# memory blocks (sim:show_mem, sim:memcg_oom_stat: a new event in the run and the table),
# and sim:fault_unstable in the table (the records stay the same).  Then: the shrinker the
# 5.10 way (kernel/shrinker.py): kswapd's priority-12 passes no longer free a slab page each.
PINNED_DEFAULT_SEED3 = "cae7e2d4abac6c83f9019e705f2362290c058b410a5ed961e2e985328e4c4448"


def _trace_bytes(cfg, seed: int, tmp_path: Path, name: str) -> bytes:
    path = tmp_path / name
    # as the command line writes it: its header also names the oomactors that wrote it
    with TraceWriter(path, seed=seed, hz=cfg.kernel.hz, config=cfg.as_dict(), extra=provenance()) as w:
        sim.run(cfg, seed=seed, sinks=[w.write])
    return path.read_bytes()


def test_same_seed_same_bytes_in_two_processes(tmp_path):
    outs = []
    for name in ("a", "b"):
        path = tmp_path / name
        subprocess.run([sys.executable, "-m", "oomactors", "run", "--seed", "3", "--trace", str(path), "--json"],
                       check=True, capture_output=True, cwd=ROOT)
        outs.append(path.read_bytes())
    assert outs[0] == outs[1]
    # and the in-process run (with hypothesis and pytest-trio imported) gives the same bytes
    assert _trace_bytes(load_default(), 3, tmp_path, "c") == outs[0]
    assert hashlib.sha256(outs[0]).hexdigest() == PINNED_DEFAULT_SEED3


def test_trio_and_asyncio_give_the_same_bytes(tmp_path):
    """The actors are stepped by the simulator itself, whichever host runs it: the host's
    own scheduler does not enter the interleaving, so both backends give one trace."""
    outs = []
    for backend in ("trio", "asyncio"):
        path = tmp_path / backend
        with TraceWriter(path, seed=5, hz=250, config={}) as w:
            r = sim.run(load_config(ROOT / "configs" / "parallel-oom.toml"), seed=5, backend=backend,
                        sinks=[w.write])
        assert r.machine.vmstat["oom_kill"] > 1
        outs.append(path.read_bytes())
    assert outs[0] == outs[1]


def _interleaving(result) -> list[tuple]:
    sw = EVENT_ID["sched:sched_switch"]
    return [(r[0], r[2], r[3]) for r in result.records if r[1] == sw]


def test_two_seeds_of_parallel_oom_interleave_differently():
    cfg = load_config(ROOT / "configs" / "parallel-oom.toml")
    a = sim.run(cfg, seed=1, keep_records=True)
    b = sim.run(cfg, seed=2, keep_records=True)
    assert _interleaving(a) != _interleaving(b)


# A parent with two children that still share its pages copy-on-write, exiting first
FORK_TWICE = """
[machine]
cpus = 1
memory = "48MiB"
[kernel]
hz = 100
[run]
duration = "300ms"
meminfo_interval = "0s"
[[tasks]]
name = "parent"
threads = 2
program = [ { op = "alloc", size = "64KiB", chunk = 1 },
            { op = "fork", program = [ { op = "alloc", size = "2MiB", chunk = 31 }, { op = "exit" } ] } ]
"""


def test_a_parents_shared_pages_go_to_its_first_child():
    """When the parent exits, its pages that children still map copy-on-write pass to one
    child: the first forked, whatever order the machine's set of mms iterates in (it was
    the set's order -- object addresses -- so one process gave two traces for one seed)."""
    from oomactors.kernel.cow import copy_present_ptes, cow_release
    from oomactors.kernel.task import MM

    m = sim.build(load_config("configs/quickstart.toml"), seed=0)
    g = m.zones[-1].gid
    parent = MM(len(m.zones))
    parent.anon[g] = 100
    m.zones[-1].anon_lru[parent] = None
    first, second = MM(len(m.zones)), MM(len(m.zones))
    copy_present_ptes(parent, first)
    copy_present_ptes(parent, second)
    m.mms = [second, parent, first]  # the later child met first
    cow_release(m, parent)
    assert (first.anon[g], parent.anon[g], second.anon[g]) == (100, 0, 0)
    assert second.cow_from is first and second.cow_pages(g) == 100


def test_same_seed_same_records_whatever_the_object_addresses():
    """One process, one seed, run again and again with other objects allocated between:
    the records do not depend on where the objects land."""
    from oomactors.config import parse_config

    cfg = parse_config(FORK_TWICE)
    runs, keep = set(), []
    for i in range(12):
        keep.append([object() for _ in range(37 * i)])  # moves the next objects' addresses
        runs.add(repr(sim.run(cfg, seed=0, keep_records=True).records))
    assert len(runs) == 1
