"""oom_badness and select_bad_process against numbers worked out by hand from
mm/oom_kill.c (Linux 5.10):

    points = get_mm_rss(mm) + MM_SWAPENTS + mm_pgtables_bytes(mm) / PAGE_SIZE
    points += oom_score_adj * (totalpages / 1000)      (integer division first)

LONG_MIN for the ineligible (unkillable, adj -1000, MMF_OOM_SKIP, in vfork); no clamp,
so the result may be negative; ties go to the later process.
"""

from __future__ import annotations

import pytest

from oomactors.kernel import gfp as G
from oomactors.kernel.oom_kill import ABORT, OomControl, oom_badness, oom_task_view, select_bad_process
from oomactors.kernel.profiles import PROFILES
from policies.linux import Linux
from oomactors.kernel.task import MM, MMF_OOM_SKIP, Signal, Task

LONG_MIN = -(2 ** 63)  # the kernel's LONG_MIN on a 64-bit machine
NZONES = 2
_pids = iter(range(100, 10_000))


def make_task(*, anon=(0, 0), file=(0, 0), shmem=(0, 0), swap=0, pgtables=(0, 0), adj=0,
              kthread=False, tgid=None, comm="t") -> Task:
    """A single-threaded process with the given per-zone counters (in pages)."""
    mm = None if kthread else MM(NZONES)
    if mm is not None:
        mm.anon, mm.file, mm.shmem = list(anon), list(file), list(shmem)
        mm.swapents = swap
        mm.pgtables = list(pgtables)
    pid = next(_pids)
    return Task(pid, pid if tgid is None else tgid, comm, 1000, frozenset(), Signal(adj), mm,
                kthread=kthread)


def badness(t: Task, totalpages: int) -> int:
    """oom_badness of the policy's view of t."""
    return oom_badness(oom_task_view(None, t), totalpages)


# rss 100+200 anon + 10 file + 5 shmem = 315, swap 50, page tables 2+1 pages: 368 points
TYPICAL = dict(anon=(100, 200), file=(10, 0), shmem=(0, 5), swap=50, pgtables=(2, 1))


def test_points_are_rss_plus_swap_plus_pagetable_pages():
    assert badness(make_task(**TYPICAL), totalpages=100_000) == 368


@pytest.mark.parametrize("adj, totalpages, expected", [
    (500, 10_000, 368 + 500 * 10),
    (1000, 262_144, 368 + 1000 * 262),   # 262144 // 1000 = 262
    (-200, 262_144, 368 - 200 * 262),
    (300, 1999, 368 + 300 * 1),          # 1999 // 1000 = 1, not 1.999
    (999, 999, 368),                     # below 1000 pages adj has no effect at all
    (-999, 999, 368),
])
def test_adj_is_scaled_by_totalpages_over_1000_truncated(adj, totalpages, expected):
    assert badness(make_task(**TYPICAL, adj=adj), totalpages) == expected


def test_negative_result_is_not_clamped():
    # 5.9+: no "points > 0 ? points : 1" any more
    assert badness(make_task(**TYPICAL, adj=-500), totalpages=1_000_000) == 368 - 500_000
    assert badness(make_task(adj=-1), totalpages=1000) == -1


def test_adj_min_is_never_chosen_whatever_its_size():
    huge = make_task(anon=(10 ** 9, 0), adj=-1000)
    assert badness(huge, totalpages=10 ** 9) == LONG_MIN


def test_mmf_oom_skip_is_never_chosen():
    t = make_task(**TYPICAL)
    t.mm.flags |= MMF_OOM_SKIP
    assert badness(t, totalpages=100_000) == LONG_MIN


def test_unkillable_and_vfork_are_never_chosen():
    assert badness(make_task(kthread=True), totalpages=100_000) == LONG_MIN
    assert badness(make_task(**TYPICAL, tgid=1), totalpages=100_000) == LONG_MIN  # init
    t = make_task(**TYPICAL)
    t.in_vfork = True
    assert badness(t, totalpages=100_000) == LONG_MIN


def test_process_is_scored_through_a_thread_that_still_has_the_mm():
    leader = make_task(**TYPICAL)
    mm = leader.mm
    Task(next(_pids), leader.tgid, "t", 1000, frozenset(), leader.signal, mm)
    leader.mm = None  # the leader exited its mm; find_lock_task_mm finds the thread
    assert badness(leader, totalpages=100_000) == 368
    for t in leader.signal.threads:
        t.mm = None
    assert badness(leader, totalpages=100_000) == LONG_MIN


# --- select_bad_process --------------------------------------------------------------------


class FakeMachine:
    """What select_bad_process reads of the machine."""

    def __init__(self, *procs: Task, profile: str = "linux-5.10") -> None:
        self.procs = list(procs)
        self.fixes: dict[str, bool] = {}
        self.all_nodes = frozenset({0})
        self.profile = PROFILES[profile]
        self.now, self.hz = 0, 250
        self.zones: list = []
        self.policy = Linux()

    def processes(self) -> list[Task]:
        return self.procs


def select(*procs: Task, totalpages: int = 100_000, profile: str = "linux-5.10") -> OomControl:
    oc = OomControl([], None, None, G.GFP_KERNEL, 0)
    oc.totalpages = totalpages
    cur = make_task()
    select_bad_process(FakeMachine(*procs, profile=profile), oc, cur)
    return oc


def test_tie_goes_to_the_later_process():
    first, second = make_task(**TYPICAL), make_task(**TYPICAL)
    oc = select(first, second)
    assert oc.chosen is second and oc.chosen_points == 368
    assert select(second, first).chosen is first


def test_before_53_the_first_of_equal_tasks_stays():
    first, second = make_task(**TYPICAL), make_task(**TYPICAL)
    for profile in ("linux-4.19", "linux-2.6.36"):
        assert select(first, second, profile=profile).chosen is first


def test_419_clamp_makes_negative_tasks_tie_at_one():
    # Yafang Shao's 5.9 case: with the clamp every strongly negative task scores 1 and the
    # first one scanned is killed, however small it is
    small = make_task(anon=(1, 0), adj=-998)
    big = make_task(anon=(5000, 0), adj=-998)
    oc = select(small, big, totalpages=1_000_000, profile="linux-4.19")
    assert oc.chosen is small and oc.chosen_points == 1
    assert select(small, big, totalpages=1_000_000).chosen is big  # 5.10: no clamp


def test_highest_points_win_and_ineligible_ones_are_skipped():
    big = make_task(anon=(1000, 0))
    small = make_task(anon=(10, 0))
    pinned = make_task(anon=(10 ** 6, 0), adj=-1000)
    oc = select(make_task(kthread=True), big, small, pinned)
    assert oc.chosen is big and oc.chosen_points == 1000
    # a negative score still beats "nobody"
    neg = make_task(anon=(10, 0), adj=-100)
    oc = select(pinned, neg)
    assert oc.chosen is neg and oc.chosen_points == 10 - 100 * 100
    assert select(pinned).chosen is None


def test_pending_victim_aborts_the_scan_until_mmf_oom_skip():
    victim, other = make_task(anon=(10, 0)), make_task(anon=(1000, 0))
    victim.signal.oom_mm = victim.mm  # marked, still exiting
    assert select(victim, other).chosen is ABORT
    victim.mm.flags |= MMF_OOM_SKIP   # reaped or given up: skipped, no longer an abort
    assert select(victim, other).chosen is other
