"""The SimPy peer's constants and event table (bench/peer_simpy.py): oomactors' own values,
copied (``oomactors.kernel.params``, 5.10's mm/vmscan.c and mm/page_alloc.c), not imported."""

from __future__ import annotations

from math import isqrt

HZ = 250
JIFFY_NS = 1_000_000_000 // HZ
SLICE = 3                       # 12 ms time slice, in jiffies
PAGE = 4096
MIB = 1 << 20
CHUNK = 32
# oomactors.kernel.params and mm/vmscan.c, mm/page_alloc.c (5.10)
FAULT_NS_PER_PAGE = 600
SCAN_NS_PER_PAGE = 150
RECLAIM_BASE_NS = 20_000
ZAP_NS_PER_PAGE = 250
ZAP_BATCH = 2048                # pages freed between two scheduling points while zapping
FORK_NS = 40_000
SLOWPATH_ROUND_NS = 5_000
OOM_SCAN_NS_PER_TASK = 300
PRINTK_NS_PER_LINE = 50_000
OOM_REPORT_LINES = 60
MAX_RECLAIM_RETRIES = 16
DEF_PRIORITY = 12
SWAP_CLUSTER_MAX = 32
SWAPPINESS = 60
SWAP_BW = 200 * MIB             # bytes per second
WRITEBACK_BW = 100 * MIB

# event ids (the peer's own table) and the oomactors event each stands for
EVENT_NAMES = (
    ("TASK_NEW", "sim:task_new"), ("SWITCH", "sched:sched_switch"), ("STEP", "sim:step"),
    ("VM_ENOUGH", "sim:vm_enough_memory"), ("SLOW_ENTER", "sim:slowpath_enter"),
    ("SLOW_EXIT", "sim:slowpath_exit"), ("DIRECT_BEGIN", "vmscan:mm_vmscan_direct_reclaim_begin"),
    ("DIRECT_END", "vmscan:mm_vmscan_direct_reclaim_end"), ("RECLAIM", "vmscan:mm_vmscan_node_reclaim"),
    ("IO_WAIT", "sim:io_wait"), ("RETRY_ZONE", "oom:reclaim_retry_zone"), ("THROTTLE", "sim:throttle"),
    ("CONTENDED", "sim:oom_lock_contended"), ("LOCK", "sim:oom_lock_acquired"),
    ("UNLOCK", "sim:oom_lock_released"), ("OOM_ENTER", "sim:out_of_memory_enter"),
    ("OOM_RETURN", "sim:out_of_memory_return"), ("OOM_HEADER", "sim:oom_header"), ("KILL", "sim:oom_kill"),
    ("REAPED", "sim:reaper_reaped"), ("FORK", "sched:sched_process_fork"), ("EXIT", "sched:sched_process_exit"),
    ("WAKEUP_KSWAPD", "vmscan:mm_vmscan_wakeup_kswapd"), ("KSWAPD_WAKE", "vmscan:mm_vmscan_kswapd_wake"),
    ("KSWAPD_SLEEP", "vmscan:mm_vmscan_kswapd_sleep"), ("KSWAPD_FAILURES", "sim:kswapd_failures"),
)
(TASK_NEW, SWITCH, STEP, VM_ENOUGH, SLOW_ENTER, SLOW_EXIT, DIRECT_BEGIN, DIRECT_END, RECLAIM, IO_WAIT,
 RETRY_ZONE, THROTTLE, CONTENDED, LOCK, UNLOCK, OOM_ENTER, OOM_RETURN, OOM_HEADER, KILL, REAPED, FORK,
 EXIT, WAKEUP_KSWAPD, KSWAPD_WAKE, KSWAPD_SLEEP, KSWAPD_FAILURES) = range(len(EVENT_NAMES))


def watermarks(managed: int) -> tuple[int, int, int]:
    """init_per_zone_wmark_min and __setup_per_zone_wmarks for one zone: min_free_kbytes =
    4 * sqrt(lowmem KiB) clamped to [128, 262144]; low and high a gap above min, the larger
    of min/4 and watermark_scale_factor (10) / 10000 of the zone."""
    min_free_kbytes = min(max(4 * isqrt(managed * (PAGE // 1024)), 128), 262144)
    wmin = min_free_kbytes // (PAGE // 1024)
    gap = max(wmin >> 2, managed * 10 // 10000)
    return wmin, wmin + gap, wmin + 2 * gap
