"""The memory blocks of an OOM report: show_mem's "Mem-Info:" for a global OOM and the memcg
"Memory cgroup stats" for a memcg OOM, read from the model's state at the dump, in the
profile's era layout; and the 6.1 layouts checked against a real 6.1 console."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import events
from oomactors.config import load_config, load_default, parse_config
from oomactors.console_mem import memcg_stat_lines
from oomactors.events import EVENT_ID
from oomactors.oomlog import parse_log
from oomactors.report import console_lines
from oomactors.sim import run

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "vm"
SHOW_MEM = EVENT_ID["sim:show_mem"]
MEMCG_STAT = EVENT_ID["sim:memcg_oom_stat"]


def _text(line: str) -> str:
    return line.split("] ", 1)[1]


def _snapshot_at(event_id: int, take):
    seen: list = []

    def check(m, rec: tuple) -> None:
        if rec[1] == event_id:
            seen.append(take(m))
    return seen, check


def _zones(m):
    return [(z.node.nid, z.name, z.vm_free, list(z.free_area), z.min_wmark, z.present, z.managed,
             list(z.lowmem_reserve), m.nodes[z.node.nid].kswapd_failures) for z in m.zones]


def _global_run(profile: str | None = None):
    cfg = load_default()
    if profile:
        cfg = cfg.model_copy(update={"kernel": cfg.kernel.model_copy(update={"profile": profile})})
    seen, check = _snapshot_at(SHOW_MEM, _zones)
    r = run(cfg, checkers=[check], keep_records=True)
    return r, seen, [_text(line) for line in console_lines(r.records, hz=r.hz)]


def test_mem_info_is_the_zones_state_at_the_dump():
    r, seen, lines = _global_run()
    assert len(seen) == 1 and len(events(r, "sim:oom_kill")) == 1
    zones = seen[0]
    start = lines.index("Mem-Info:")
    assert "invoked oom-killer" in lines[start - 1]
    assert lines.index("Tasks state (memory values in pages):") > start
    free = int(re.search(r" free:(\d+) ", lines[start + 6]).group(1))
    assert free == sum(z[2] for z in zones)
    for nid, name, vm_free, area, wmin, present, managed, reserve, _failures in zones:
        zl = next(line for line in lines if line.startswith(f"Node {nid} {name} free:"))
        assert f" free:{vm_free * 4}kB min:{wmin * 4}kB " in zl
        assert f" present:{present * 4}kB managed:{managed * 4}kB " in zl
        after = lines[lines.index(zl) + 1]
        assert after == "lowmem_reserve[]: " + " ".join(map(str, reserve + reserve[-1:]))
        buddy = next(line for line in lines if line.startswith(f"Node {nid} {name}: "))
        counts = [int(c) for c in re.findall(r"(\d+)\*\d+kB", buddy)]
        assert counts == area
        assert buddy.endswith(f"= {sum(n << o for o, n in enumerate(area)) * 4}kB")
    m = r.machine
    assert f"{sum(z[5] for z in zones)} pages RAM" in lines
    assert f"{sum(z[5] - z[6] for z in zones)} pages reserved" in lines
    assert f"Total swap = {m.total_swap_pages * 4}kB" in lines
    # all_unreclaimable? is kswapd_failures >= MAX_RECLAIM_RETRIES at the dump
    node = next(line for line in lines if line.startswith("Node 0 active_anon:"))
    assert node.endswith("all_unreclaimable? " + ("yes" if zones[0][8] >= 16 else "no"))


def test_replay_reads_the_models_own_report_and_its_totals():
    r, _, lines = _global_run()
    text = "\n".join(console_lines(r.records, hz=r.hz)) + "\n"
    reports, warnings = parse_log(text)
    assert len(reports) == 1 and not warnings
    rep = reports[0]
    kill = events(r, "sim:oom_kill")[0]
    assert rep.killed.pid == kill["pid"]
    m = r.machine
    # pages RAM - pages reserved + swap: the model's own totalpages
    assert rep.totalpages()[0] == m.totalram_pages + m.total_swap_pages


def test_mem_info_era_layouts():
    _, _, old = _global_run("linux-4.19")
    assert "Mem-Info:" not in old  # no layout checked for 4.19: the block is not printed
    _, _, six = _global_run("linux-6.1")
    zone = next(line for line in six if re.match(r"Node 0 \w+ free:", line))
    assert " boost:0kB min:" in zone and " pagetables:" not in zone
    assert " sec_pagetables:0 bounce:0" in six
    _, _, ten = _global_run("linux-5.10")
    zone = next(line for line in ten if re.match(r"Node 0 \w+ free:", line))
    assert "boost" not in zone and " pagetables:" in zone


def _shape(line: str) -> str:
    """A line's field names: numbers become N, the buddy lists' migrate types go."""
    line = re.sub(r" \([UMEHCI]+\)", "", line)
    return re.sub(r"\d+", "N", line)


def test_6_1_mem_info_has_the_shape_of_a_real_6_1_console():
    real = [_text(line) for line in (DATA / "global-meminfo.console").read_text().splitlines()]
    real = real[real.index("Mem-Info:"):real.index("Tasks state (memory values in pages):")]
    _, _, six = _global_run("linux-6.1")
    ours = six[six.index("Mem-Info:"):six.index("Tasks state (memory values in pages):")]
    # the guest has DMA and DMA32; the model's default machine DMA, DMA32 and Normal
    real_shapes = {_shape(line.replace(" DMA32", " Z").replace(" DMA", " Z")) for line in real}
    our_shapes = {_shape(re.sub(r" (DMA32|DMA|Normal)", " Z", line)) for line in ours}
    assert our_shapes == real_shapes


def _memcg_run():
    cfg = load_config(ROOT / "configs" / "memcg-max.toml")

    def anon_bytes(m):
        memcg = m.memcgs["/work"]
        return sum(sum(mm.anon) for mm in m.mms if mm.memcg is memcg) * 4096
    seen, check = _snapshot_at(MEMCG_STAT, anon_bytes)
    r = run(cfg, checkers=[check], keep_records=True)
    return r, seen, [_text(line) for line in console_lines(r.records, hz=r.hz)]


def test_memcg_stat_block_is_the_memcgs_state_in_5_10_order():
    r, seen, lines = _memcg_run()
    assert seen and all(a > 0 for a in seen)
    i = lines.index("Memory cgroup stats for /work:")
    assert lines[i - 2].startswith("memory: usage ") and lines[i - 1].startswith("swap: usage ")
    assert lines[i + 1] == f"anon {seen[0]}"
    keys = []
    for line in lines[i + 1:]:
        if line.startswith("Tasks state"):
            break
        keys.append(line.split()[0])
    # 5.10's memory_stat_format order; what the model keeps per memcg, nothing else
    assert keys == ["anon", "file", "kernel_stack", "percpu", "sock", "shmem", "file_mapped",
                    "file_dirty", "file_writeback", "anon_thp", "inactive_anon", "active_anon",
                    "inactive_file", "active_file", "unevictable", "slab_reclaimable",
                    "slab_unreclaimable", "slab", "workingset_refault_anon", "workingset_refault_file",
                    "pgscan", "pgsteal", "pglazyfree", "pglazyfreed", "thp_fault_alloc",
                    "thp_collapse_alloc"]
    stat = dict(line.split() for line in lines[i + 1:i + 1 + len(keys)])
    usage_kb = int(re.search(r"usage (\d+)kB", lines[i - 2]).group(1))
    assert int(stat["anon"]) + int(stat["file"]) <= usage_kb * 1024
    assert int(stat["inactive_anon"]) + int(stat["active_anon"]) == int(stat["anon"]) + int(stat["shmem"])


def test_memcg_stat_is_cut_as_the_6_1_console_cuts_it():
    """The real 6.1 console printed memory.stat up to workingset_nodereclaim: the rest of the
    one-record text did not fit printk's 1024-byte console buffer with its prefixes."""
    real = (DATA / "memcg-max.console").read_text().splitlines()
    i = next(k for k, line in enumerate(real) if line.endswith("Memory cgroup stats for /work:"))
    printed = []
    for line in real[i + 1:]:
        if "Tasks state" in line:
            break
        printed.append(_text(line))
    # the values the guest printed, and the events that followed them in its record
    stat = [line.split() for line in printed] + [
        [k, "0"] for k in ("pgscan", "pgsteal", "pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd",
                           "pgsteal_direct", "pgfault", "pgmajfault")]
    out = memcg_stat_lines("6.1", "/work", stat, len("[    7.766899] "))
    assert out[0] == "Memory cgroup stats for /work:"
    assert out[1:] == printed
    assert printed[-1] == "workingset_nodereclaim 0"


def test_cpuset_oom_shows_only_the_allowed_node():
    """SHOW_MEM_FILTER_NODES: a CONSTRAINT_CPUSET OOM in a cpuset of node 0 (LTP oom04's
    shape) prints node 0's lines only; hugetlb_show_meminfo lists every node."""
    r = run(load_config(ROOT / "configs" / "cpuset-one-node.toml"), keep_records=True)
    lines = [_text(line) for line in console_lines(r.records, hz=r.hz)]
    assert any(k["constraint"] == "CONSTRAINT_CPUSET" for k in events(r, "sim:oom_kill"))
    assert "Mem-Info:" in lines
    assert any(line.startswith("Node 0 Normal free:") for line in lines)
    assert not any(line.startswith("Node 1") and "hugepages" not in line for line in lines)
    assert sum(line.startswith("Node 1 hugepages_total") for line in lines) >= 1


def test_6_1_hugepages_lines_follow_the_report_nodes():
    """From 6.0 (dcadcf1c3061) hugetlb_show_meminfo skips the nodes the report filters out:
    the same cpuset OOM on the 6.1 profile lists node 0's hugepages only."""
    text = (ROOT / "configs" / "cpuset-one-node.toml").read_text()
    r = run(parse_config(text.replace("[run]", '[kernel]\nprofile = "linux-6.1"\n\n[run]', 1)),
            keep_records=True)
    lines = [_text(line) for line in console_lines(r.records, hz=r.hz)]
    assert any(k["constraint"] == "CONSTRAINT_CPUSET" for k in events(r, "sim:oom_kill"))
    assert any(line.startswith("Node 0 hugepages_total") for line in lines)
    assert not any(line.startswith("Node 1") for line in lines)


STACKS = """
[machine]
cpus = 2
memory = "256MiB"
swap = "0"
[kernel]
profile = "linux-5.10"
[run]
duration = "3s"
[[tasks]]
name = "master"
program = [
  { op = "fork", comm = "child", program = [ { op = "repeat", steps = [ { op = "sleep", time = "1s" } ] } ] },
  { op = "fork", comm = "thread", clone_vm = true, program = [
      { op = "repeat", steps = [ { op = "sleep", time = "1s" } ] } ] },
  { op = "alloc", size = "2MiB", kind = "kernel", gfp = "GFP_KERNEL" },
  { op = "sleep", time = "10ms" },
  { op = "repeat", steps = [ { op = "alloc", size = "8MiB" } ] },
]
"""


def test_kernel_stack_counts_thread_size_per_forked_task_and_nothing_else():
    """NR_KERNEL_STACK_KB is THREAD_SIZE (16 KiB on x86-64) per task stack (kernel/fork.c
    account_kernel_stack); a new mm's pgd and other kernel pages are in no Mem-Info counter.
    Two forks (a process, with its pgd, and a thread) and 2 MiB of GFP_KERNEL pages: 32 kB,
    where the block used to print every "kernel" page (stacks, pgds and the 2 MiB: 2084 kB).  A stack leaves the count when its task is gone."""
    r = run(parse_config(STACKS), keep_records=True)
    dump = events(r, "sim:show_mem")[0]
    before = [e["event"] for e in events(r, "sched:sched_process_fork", "sched:sched_process_exit")
              if e["i"] < dump["i"]]
    assert before == ["sched:sched_process_fork"] * 2
    assert [n[9] for n in dump["nodes"]] == [2 * 16]
    lines = [_text(line) for line in console_lines(r.records, hz=r.hz)]
    node = next(line for line in lines if line.startswith("Node 0 active_anon:"))
    assert " kernel_stack:32kB " in node
    forked = {e["child_pid"] for e in events(r, "sched:sched_process_fork")}
    gone = {e["pid"] for e in events(r, "sched:sched_process_exit")} & forked
    assert gone  # the OOM kill took the thread with master (one mm)
    assert r.machine.nodes[0].kernel_stack_kb == 16 * len(forked - gone)
