"""Badness and /proc/PID/oom_score by kernel era, against hand-computed numbers
(kernel-oom-killer.md §6 and §12.4)."""

from __future__ import annotations

from test_badness import TYPICAL, make_task

from oomactors.kernel import profiles
from oomactors.kernel.oom_kill import oom_task_view
from oomactors.kernel.profiles import LONG_MIN, PROFILES, _shift_hz, int_sqrt_24, oom_score_59, oom_score_permille


def _on_view(fn):
    """The era's badness of the policy's view of a test task."""
    return lambda t, *args: fn(oom_task_view(None, t), *args)


badness_24, badness_2636, badness_419 = map(_on_view, (profiles.badness_24, profiles.badness_2636,
                                                       profiles.badness_419))

HZ = 100


def test_shift_hz_matches_the_kernel_table():
    assert [_shift_hz(h) for h in (100, 250, 300, 1000)] == [7, 8, 8, 10]


def test_24_int_sqrt_is_the_rough_one():
    # 2.4's approximation, not the exact root: it is 3 for 16 and 9 for 100, and never 0
    assert [int_sqrt_24(x) for x in (0, 1, 4, 8, 12, 16, 100, 256)] == [1, 1, 2, 2, 3, 3, 9, 12]


def test_badness_24_divides_by_roots_of_cpu_and_run_time():
    t = make_task()
    t.mm.total_vm = 100_000
    t.uid = 1000
    # cpu time: 8192 jiffies -> cpu_time = 8192 >> 10 = 8 -> int_sqrt_24 2
    t.cpu_ns = 8192 * 10_000_000
    # run time: (now - start) >> 17 = 256 -> int_sqrt_24(int_sqrt_24(256)) = int_sqrt_24(12) = 3
    t.start_time = 0
    now = 256 << 17
    assert badness_24(t, 0, now, HZ) == 100_000 // 2 // 3
    # nice doubles, root quarters, CAP_SYS_RAWIO quarters again
    t.nice = 5
    assert badness_24(t, 0, now, HZ) == 100_000 // 2 // 3 * 2
    t.nice, t.uid = 0, 0
    assert badness_24(t, 0, now, HZ) == 100_000 // 2 // 3 // 4
    t.caps = frozenset({"CAP_SYS_RAWIO"})
    assert badness_24(t, 0, now, HZ) == 100_000 // 2 // 3 // 4 // 4


def test_badness_24_young_idle_task_keeps_its_total_vm():
    t = make_task()
    t.mm.total_vm = 5000
    assert badness_24(t, 0, 0, HZ) == 5000  # 2.4's int_sqrt never returns 0


def test_badness_2636_is_permille_with_root_bonus_and_clamp():
    # rss 315 + page tables 3 + swap 50 = 368 pages of T = 10_000 -> 36 per mille
    assert badness_2636(make_task(**TYPICAL), 10_000, 0, HZ) == 36
    admin = make_task(**TYPICAL)
    admin.caps = frozenset({"CAP_SYS_ADMIN"})
    assert badness_2636(admin, 10_000, 0, HZ) == 6
    assert badness_2636(make_task(**TYPICAL, adj=-500), 10_000, 0, HZ) == 1   # clamped up to 1
    assert badness_2636(make_task(**TYPICAL, adj=1000), 10_000, 0, HZ) == 1000  # and down to 1000
    assert badness_2636(make_task(**TYPICAL, adj=-1000), 10_000, 0, HZ) == 0


def test_badness_419_clamps_eligible_tasks_to_one():
    assert badness_419(make_task(**TYPICAL), 100_000, 0, HZ) == 368
    assert badness_419(make_task(**TYPICAL, adj=-500), 1_000_000, 0, HZ) == 1
    assert badness_419(make_task(**TYPICAL, adj=-1000), 100_000, 0, HZ) == 0


def test_oom_score_by_era():
    # 5.9+: (1000 + points*1000/T) * 2/3; an idle task reads 666
    assert oom_score_59(0, 1000) == 666
    assert oom_score_59(1000, 1000) == 1333
    assert oom_score_59(LONG_MIN, 1000) == 0
    assert oom_score_permille(368, 10_000) == 36


def test_profiles_say_what_differs():
    p24, p2636, p419, p510, p612 = (PROFILES[n] for n in
                                    ("linux-2.4", "linux-2.6.36", "linux-4.19", "linux-5.10", "linux-6.12"))
    assert p24.oom_checklist_24 and p24.kswapd_calls_oom and p24.vm_enough_memory == "2.4"
    assert p24.pagefault_oom == "kill_current"
    assert not p2636.oom_reaper and p2636.sacrifice_child
    assert p419.sacrifice_child and not p419.ties_to_later and p419.memcg_oom_failure == "force"
    assert p510.ties_to_later and not p510.sacrifice_child and p510.pagefault_oom == "global"
    assert p612.reaper_delay_s == 2 and p612.pagefault_oom == "none" and p612.memcg_oom_failure == "enomem"
    assert p612.exit_mmap_skip_after_unmap


def test_24_checklist_delays_the_kill():
    from types import SimpleNamespace

    from oomactors.kernel.oom_kill_24 import OomState24, out_of_memory_checklist

    m = SimpleNamespace(hz=100, swap_free=0, now=0, oom24=OomState24())

    def call(at):
        m.now = at
        return out_of_memory_checklist(m)

    m.swap_free = 1
    assert call(1000) == "swap_left"          # one free swap slot disables the OOM killer
    m.swap_free = 0
    assert call(1000) == "first_failure_in_5s"
    assert call(1050) == "failing_less_than_1s"
    reasons = [call(1100 + i) for i in range(11)]
    assert reasons[:9] == ["fewer_than_10_failures"] * 9   # failures 1..9 once failing for 1 s
    assert reasons[9] is None                                # the 10th: kill
    assert reasons[10] == "failing_less_than_1s"             # a new burst starts at the kill
    # a second kill needs 1 s of failing, 10 failures and 5 s since the last kill
    assert [call(1300 + i * 10) for i in range(12)].count(None) == 0
    assert None in [call(1700 + i) for i in range(12)]
