"""Kernel eras as data plus a few small hooks, chosen once at start-up.

No ``if version >= ...`` is scattered through the model: code that behaves differently in
another era asks the run's :class:`Profile` (``m.profile``) a question with a name.
The default is ``linux-5.10``, the seed's code.

Sources: /work/shared/reference/kernel-oom-killer.md §6 (badness by era), §5.5 (ties),
§7.2 (sacrifice child), §9.1 (reaper delay), §9.5 (exit_mmap), §12.4 (oom_score), and
kernel-allocation.md §6 (the 2.4 checklist) and §7 (page faults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from policies.api import SKIPPED as _SKIPPED
from policies.api import UNKILLABLE as _UNKILLABLE
from policies.api import TaskView
from policies import api

from .oom_kill import oom_badness
from .task import OOM_SCORE_ADJ_MIN, PAGE_SIZE

LONG_MIN = -(1 << 63)


def _shift_hz(hz: int) -> int:
    """SHIFT_HZ: log2(HZ) rounded as include/linux/jiffies.h picks it (100 -> 7, 250 -> 8)."""
    s = 0
    while (1 << (s + 1)) <= hz + hz // 2:
        s += 1
    return s


_NO_MM_24 = frozenset((api.KTHREAD, api.NO_MM))


def _unkillable(p: "TaskView") -> bool:
    return bool(p.flags & _UNKILLABLE)




# --- badness by era -------------------------------------------------------------------
def int_sqrt_24(x: int) -> int:
    """2.4's own rough square root in mm/oom_kill.c: halve the answer for every two bits
    shifted out of x, take a quarter off if a bit is left, and never answer 0."""
    out = x
    while x & ~1:
        x >>= 2
        out >>= 1
    if x:
        out -= out >> 2
    return out or 1


def badness_24(p: "TaskView", totalpages: int, now: int, hz: int) -> int:
    """2.4 badness(): total_vm divided by the square root of CPU time and the fourth root of
    run time (with 2.4's own rough int_sqrt, which never returns 0), doubled for niced tasks, quartered for
    root/CAP_SYS_ADMIN and again for CAP_SYS_RAWIO.  Only a task without an mm scores 0:
    init is scored like anyone else."""
    if p.flags & _NO_MM_24:
        return 0
    points = p.total_vm
    shift = _shift_hz(hz)
    jiffy_ns = 1_000_000_000 // hz
    cpu_jiffies = p.cpu_ns // jiffy_ns
    cpu_time = cpu_jiffies >> (shift + 3)
    run_time = max(0, now - p.start_time) >> (shift + 10)
    points //= int_sqrt_24(cpu_time)
    points //= int_sqrt_24(int_sqrt_24(run_time))
    if p.nice > 0:
        points *= 2
    if "CAP_SYS_ADMIN" in p.caps or p.uid == 0:
        points //= 4
    if "CAP_SYS_RAWIO" in p.caps:
        points //= 4
    return points


def badness_2636(p: "TaskView", totalpages: int, now: int, hz: int) -> int:
    """2.6.36-3.4: per-mille of totalpages, root bonus of 30, adj added, clamped to 1..1000."""
    if _unkillable(p):
        return 0
    adj = p.oom_score_adj
    if adj == OOM_SCORE_ADJ_MIN:
        return 0
    # rss and swap only: page tables joined the sum later (3.x), not in the 2.6.36 rewrite
    points = p.rss + p.swapents
    points = points * 1000 // max(1, totalpages)
    if "CAP_SYS_ADMIN" in p.caps:
        points -= 30
    points += adj
    if points <= 0:
        return 1
    return min(points, 1000)


def badness_310(p: "TaskView", totalpages: int, now: int, hz: int) -> int:
    """3.5-3.13: pages (rss + page tables + swap), the root bonus taken off adj (30 per
    mille of totalpages), adj in totalpages/1000 units, eligible tasks never below 1.
    MMF_OOM_SKIP and in_vfork did not exist yet."""
    if _unkillable(p):
        return 0
    adj = p.oom_score_adj
    if adj == OOM_SCORE_ADJ_MIN:
        return 0
    points = p.rss + p.swapents + p.pgtables_bytes // PAGE_SIZE
    if "CAP_SYS_ADMIN" in p.caps:
        adj -= 30
    points += adj * (totalpages // 1000)
    return points if points > 0 else 1


def badness_414(p: "TaskView", totalpages: int, now: int, hz: int) -> int:
    """3.14-4.16: the root bonus became 3% of the task's own pages (778c14affaf9);
    reaped (MMF_OOM_SKIP) and vforking tasks are ineligible (verified at 4.14)."""
    if _unkillable(p):
        return 0
    adj = p.oom_score_adj
    if adj == OOM_SCORE_ADJ_MIN or p.flags & _SKIPPED:
        return 0
    points = p.rss + p.swapents + p.pgtables_bytes // PAGE_SIZE
    if "CAP_SYS_ADMIN" in p.caps:
        points -= points * 3 // 100
    points += adj * (totalpages // 1000)
    return points if points > 0 else 1


def badness_419(p: "TaskView", totalpages: int, now: int, hz: int) -> int:
    """4.17-5.8: pages, adj in totalpages/1000 units, eligible tasks never below 1."""
    if _unkillable(p):
        return 0
    adj = p.oom_score_adj
    if adj == OOM_SCORE_ADJ_MIN or p.flags & _SKIPPED:
        return 0
    points = p.rss + p.swapents + p.pgtables_bytes // PAGE_SIZE
    points += adj * (totalpages // 1000)
    return points if points > 0 else 1


def badness_510(p: "TaskView", totalpages: int, now: int, hz: int) -> int:
    """5.9+: the same, signed and unclamped; LONG_MIN for the ineligible (mm/oom_kill.c)."""
    return oom_badness(p, totalpages)


# --- /proc/PID/oom_score by era ---------------------------------------------------------
def oom_score_raw(points: int, totalpages: int) -> int:
    return max(0, points)


def oom_score_permille(points: int, totalpages: int) -> int:
    return max(0, points) * 1000 // max(1, totalpages)


def oom_score_59(points: int, totalpages: int) -> int:
    """5.9+: 0 for LONG_MIN, else (1000 + points*1000/T) * 2/3, so 0..2000 (666 = idle)."""
    if points == LONG_MIN:
        return 0
    # C's long division truncates towards zero: a negative badness must not round down
    scaled = points * 1000
    t = max(1, totalpages)
    per_mille = scaled // t if scaled >= 0 else -(-scaled // t)
    return (1000 + per_mille) * 2 // 3


@dataclass(frozen=True)
class Profile:
    """What differs between kernel eras, by name."""

    name: str
    badness: Callable[["TaskView", int, int, int], int]
    ineligible: int                  # what badness returns for a task that must not be picked
    ties_to_later: bool              # equal points: the later task wins (5.3+) or the first
    sacrifice_child: bool            # 2.6.36-5.0: kill the worst child instead of the parent
    oom_checklist_24: bool           # 2.4's out_of_memory() gate (swap, 5 s windows, 10 failures)
    kswapd_calls_oom: bool           # 2.4: kswapd's failed balance runs out_of_memory() itself
    vm_enough_memory: str            # "modern" or "2.4"
    oom_reaper: bool                 # the oom_reaper exists (4.6+)
    reaper_delay_s: int              # 5.18+: OOM_REAPER_DELAY before the victim is reaped
    exit_mmap_skip_after_unmap: bool  # 6.0+: exit_mmap sets MMF_OOM_SKIP once VMAs are unmapped
    pagefault_oom: str               # VM_FAULT_OOM in a user fault: "global" OOM (<=5.15),
                                     # "none" (5.16+: just retry), "kill_current" (2.4)
    memcg_oom_failure: str           # "force" (charge over the limit) or "enomem"
    oom_score: Callable[[int, int], int]
    console: str                     # which console format the report uses
    adj_floor: str = "min"           # an unprivileged adj write may not go below: "current"
                                     # (<= 3.1: the present value) or "min" (oom_score_adj_min)
    compact_early_return: str = ""   # __alloc_pages_direct_compact returns before COMPACTSTALL on:
                                     # "inactive" (skipped/deferred, <= 5.0), "skipped" (6.x), "" (5.10)
    oom_group_kill_event: bool = False  # memory.events' oom_group_kill counter (5.17+)
    select_24: bool = False          # 2.4's select_bad_process: every task but pid 0 (init too),
                                     # no wait for a pending victim; SIGTERM to CAP_SYS_RAWIO
    show_mem: str = ""               # the layout of the report's Mem-Info and memcg memory.stat
                                     # blocks ("5.10", "6.1"; "": not printed, layout unchecked)
    mark_victim_pid_only: bool = True  # oom:mark_victim's TP_printk is "pid=%d": before 6.9
                                       # (72ba14deb40a), whose fields stable 6.1.130+ took in 2025


PROFILES: dict[str, Profile] = {
    p.name: p for p in (
        Profile("linux-2.4", badness_24, 0, False, False, True, True, "2.4", False, 0, False, "kill_current",
                "force", oom_score_raw, "2.4", "current", compact_early_return="inactive", select_24=True),
        Profile("linux-2.6.36", badness_2636, 0, False, True, False, False, "modern", False, 0, False,
                "global", "force", oom_score_raw, "2.6.36", "current", compact_early_return="inactive"),
        # 3.5-3.13 and 3.14-4.16: the 4.19 selection and kill path with their own badness;
        # the oom_reaper came in 4.6.  Their consoles print nr_ptes (and nr_pmds from 4.1)
        Profile(name="linux-3.10", badness=badness_310, ineligible=0, ties_to_later=False,
                sacrifice_child=True, oom_checklist_24=False, kswapd_calls_oom=False,
                vm_enough_memory="modern", oom_reaper=False, reaper_delay_s=0,
                exit_mmap_skip_after_unmap=False, pagefault_oom="global", memcg_oom_failure="force",
                oom_score=oom_score_permille, console="3.10", compact_early_return="inactive"),
        Profile(name="linux-4.14", badness=badness_414, ineligible=0, ties_to_later=False,
                sacrifice_child=True, oom_checklist_24=False, kswapd_calls_oom=False,
                vm_enough_memory="modern", oom_reaper=True, reaper_delay_s=0,
                exit_mmap_skip_after_unmap=False, pagefault_oom="global", memcg_oom_failure="force",
                oom_score=oom_score_permille, console="4.14", compact_early_return="inactive"),
        Profile("linux-4.19", badness_419, 0, False, True, False, False, "modern", True, 0, False, "global",
                "force", oom_score_permille, "4.19", compact_early_return="inactive"),
        Profile("linux-5.10", badness_510, LONG_MIN, True, False, False, False, "modern", True, 0, False,
                "global", "force", oom_score_59, "5.10", show_mem="5.10"),
        # 5.18-6.7 (Debian 12's 6.1): every 6.12 behaviour above, but the console still prints
        # the 5.x task table (rss_anon/rss_file/rss_shmem columns came in 6.8)
        Profile("linux-6.1", badness_510, LONG_MIN, True, False, False, False, "modern", True, 2, True,
                "none", "enomem", oom_score_59, "5.10", compact_early_return="skipped",
                oom_group_kill_event=True, show_mem="6.1", mark_victim_pid_only=False),
        Profile("linux-6.12", badness_510, LONG_MIN, True, False, False, False, "modern", True, 2, True,
                "none", "enomem", oom_score_59, "6.x", compact_early_return="skipped",
                oom_group_kill_event=True, mark_victim_pid_only=False),
    )
}
DEFAULT_PROFILE = "linux-5.10"
