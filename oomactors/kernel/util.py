"""Virtual-memory commit accounting (mm/util.c, Linux 5.2+; and Linux 2.4's heuristic).

Overcommit is a second, earlier line of defence than the OOM killer: when a process
*asks* for address space that may later need memory (an accountable mmap, shmem setup,
brk growth, fork of accounted mappings), the kernel charges the request to the global
counter ``vm_committed_as`` (/proc/meminfo Committed_AS) and may refuse it with -ENOMEM
right there.  A refusal is not an OOM: nobody is killed, the program gets the error and
decides what to do.

* :func:`__vm_enough_memory` -- the policy of ``vm.overcommit_memory`` (0 GUESS, 1 ALWAYS,
  2 NEVER) in its 5.2+ form: charge first, judge, uncharge on failure.
* :func:`vm_commit_limit` -- /proc/meminfo CommitLimit for mode 2.
* :func:`vm_enough_memory_24` -- 2.4's ``vm_enough_memory()``: no counter, each request
  judged alone against memory that looks free or cheaply freeable.  Selected by the
  config key ``kernel.overcommit_heuristic = "2.4"`` for now; kernel profiles will pick it.
* :func:`security_vm_enough_memory_mm` -- the LSM entry the call sites use
  (security/commoncap.c ``cap_vm_enough_memory`` decides ``cap_sys_admin``); it picks the
  heuristic, records which mm carries the charge and emits ``sim:vm_enough_memory``.

The counter is exact here (the kernel's is a per-CPU counter read approximately; switching
to mode 2 syncs it, so mode 2 behaves as if exact).  Per-mm bookkeeping -- which the kernel
keeps as VM_ACCOUNT on VMAs -- is ``MM.vm_accounted`` (private writable anonymous mappings;
fork charges it again for the child, munmap and exit_mmap give it back) and
``MM.shmem_accounted`` (shmem objects the mm created, given back when they die with it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from .task import MM, Task

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Kernel
    from ..machine import Machine

ENOMEM = 12
PAGE_SHIFT = 12

# include/uapi/linux/mman.h
OVERCOMMIT_GUESS = 0
OVERCOMMIT_ALWAYS = 1
OVERCOMMIT_NEVER = 2

HEURISTICS = ("modern", "2.4")


# --- boot ------------------------------------------------------------------------------
def init_overcommit(m: "Machine", k: "Kernel") -> None:
    """The overcommit sysctls, with mm/util.c's init_user_reserve / init_admin_reserve.

    Both reserves default to 3% (1/32) of the memory free when the initcall runs, capped at
    128 MiB (user) and 8 MiB (admin).  "Free at boot" is the free memory of the machine as
    the config builds it (after the boot-time page cache and slab).
    """
    m.overcommit_memory = k.overcommit_memory
    m.overcommit_ratio = k.overcommit_ratio
    m.overcommit_kbytes = k.overcommit_kbytes
    # the 2.4 profile brings 2.4's heuristic with it
    m.overcommit_heuristic = "2.4" if m.profile.vm_enough_memory == "2.4" else k.overcommit_heuristic
    free_kbytes = sum(z.nr_free for z in m.zones) << (PAGE_SHIFT - 10)
    m.user_reserve_kbytes = (min(free_kbytes // 32, 1 << 17) if k.user_reserve_kbytes == "auto"
                             else k.user_reserve_kbytes)
    m.admin_reserve_kbytes = (min(free_kbytes // 32, 1 << 13) if k.admin_reserve_kbytes == "auto"
                              else k.admin_reserve_kbytes)
    m.vm_committed_as = 0


# --- the counter -------------------------------------------------------------------------
def vm_acct_memory(m: "Machine", pages: int) -> None:
    """Add to Committed_AS (include/linux/mman.h)."""
    m.vm_committed_as += pages


def vm_unacct_memory(m: "Machine", pages: int) -> None:
    """Take back from Committed_AS."""
    m.vm_committed_as -= pages


def vm_commit_limit(m: "Machine") -> int:
    """CommitLimit: overcommit_kbytes when set, else overcommit_ratio % of RAM (no hugetlb
    pages here to leave out), plus all of swap."""
    if m.overcommit_kbytes:
        allowed = m.overcommit_kbytes >> (PAGE_SHIFT - 10)
    else:
        allowed = m.totalram_pages * m.overcommit_ratio // 100
    return allowed + m.total_swap_pages


# --- the modern check --------------------------------------------------------------------
def _mm_of(mm_or_task: Union[MM, Task, None]) -> MM | None:
    return mm_or_task.mm if isinstance(mm_or_task, Task) else mm_or_task


def _vm_enough_memory(m: "Machine", mm: MM | None, pages: int,
                      cap_sys_admin: bool) -> tuple[int, int, int]:
    """__vm_enough_memory, also returning what it compared: (ret, committed, allowed).

    ``committed`` is Committed_AS with this request charged; ``allowed`` is the bound it was
    judged by (mode 0: the single-request limit RAM + swap; mode 1: -1, no bound)."""
    # charge first: concurrent requests see each other's charges
    vm_acct_memory(m, pages)
    committed = m.vm_committed_as
    # mode 1: sometimes we want to use more memory than we have
    if m.overcommit_memory == OVERCOMMIT_ALWAYS:
        return 0, committed, -1
    # mode 0 (5.2+): refuse only a request that could never fit, whatever is in use now
    if m.overcommit_memory == OVERCOMMIT_GUESS:
        allowed = m.totalram_pages + m.total_swap_pages
        if pages > allowed:
            vm_unacct_memory(m, pages)
            return -ENOMEM, committed, allowed
        return 0, committed, allowed
    # mode 2: a hard limit on everything committed so far
    allowed = vm_commit_limit(m)
    # keep some back for root (CAP_SYS_ADMIN) to log in and repair things
    if not cap_sys_admin:
        allowed -= m.admin_reserve_kbytes >> (PAGE_SHIFT - 10)
    # don't let a single process grow so big that its user cannot recover
    if mm is not None:
        reserve = m.user_reserve_kbytes >> (PAGE_SHIFT - 10)
        allowed -= min(mm.total_vm // 32, reserve)
    if max(0, committed) < allowed:  # percpu_counter_read_positive
        return 0, committed, allowed
    vm_unacct_memory(m, pages)
    return -ENOMEM, committed, allowed


def __vm_enough_memory(m: "Machine", mm_or_task: Union[MM, Task, None], pages: int,
                       cap_sys_admin: bool) -> int:
    """0 if ``pages`` more may be committed (and they now are), else -ENOMEM (uncharged).

    ``mm_or_task`` gives the mm whose size sets the user reserve (None: no user reserve)."""
    return _vm_enough_memory(m, _mm_of(mm_or_task), pages, cap_sys_admin)[0]


# --- Linux 2.4 -----------------------------------------------------------------------------
def vm_enough_memory_24_free(m: "Machine") -> int:
    """What 2.4's vm_enough_memory() counts as available, in pages.

    * the page cache (our clean, dirty and under-writeback file pages);
    * free pages -- buddy lists and per-CPU lists alike (2.4 had no per-CPU lists, so every
      free page counted);
    * free swap slots;
    * the swap cache (``swapper_space.nrpages``): the model has no swap cache, so 0;
    * unused dentries and inodes: the model's reclaimable slab stands for both caches.
    """
    free = sum(z.nr["file"] + z.nr["dirty"] + z.nr["writeback"] for z in m.zones)
    free += sum(z.nr_free for z in m.zones) + sum(sum(c.pcp) for c in m.sched.cpus)
    free += m.swap_free
    free += 0  # swap cache: not modelled
    free += sum(z.nr["slab_reclaimable"] for z in m.zones)
    return free


def vm_enough_memory_24(m: "Machine", pages: int) -> int:
    """2.4 ``vm_enough_memory()``: 1 if ``pages`` look available, else 0.

    Any non-zero overcommit_memory means "always" (strict mode 2 came with 2.6).  There is
    no committed-memory counter: the request is judged alone against memory that is free
    or cheap to free right now."""
    if m.overcommit_memory:
        return 1
    return 1 if vm_enough_memory_24_free(m) > pages else 0


# --- the entry the call sites use -----------------------------------------------------------
def security_vm_enough_memory_mm(m: "Machine", task: Task, mm: MM | None, pages: int, *,
                                 charge_to: MM | None = None, field: str = "vm_accounted") -> int:
    """security_vm_enough_memory_mm -> cap_vm_enough_memory -> the era's heuristic.

    ``mm`` sets the user reserve (the caller's mm; for fork the *parent's*, as dup_mmap
    passes oldmm).  On success the charge is recorded on ``charge_to.<field>`` so munmap
    and exit can give back exactly what was charged.  Emits ``sim:vm_enough_memory``.
    """
    cap_sys_admin = "CAP_SYS_ADMIN" in task.caps
    if m.overcommit_heuristic == "2.4":
        committed = m.vm_committed_as + pages
        allowed = -1 if m.overcommit_memory else vm_enough_memory_24_free(m)
        ok = vm_enough_memory_24(m, pages)
        if ok:
            # 2.4 kept no counter; the model keeps Committed_AS anyway, for observation
            vm_acct_memory(m, pages)
        ret = 0 if ok else -ENOMEM
    else:
        ret, committed, allowed = _vm_enough_memory(m, mm, pages, cap_sys_admin)
    if ret == 0 and charge_to is not None:
        setattr(charge_to, field, getattr(charge_to, field) + pages)
    m.emit("sim:vm_enough_memory", task.pid, pages, m.overcommit_memory, committed, allowed, ret,
           m.overcommit_heuristic)
    return ret


# --- giving charges back ----------------------------------------------------------------------
def vm_unacct_munmap(m: "Machine", mm: MM, pages: int | None) -> int:
    """munmap of anonymous memory: give back the accounted pages unmapped (``None``: all of
    them).  Returns the pages uncharged."""
    k = mm.vm_accounted if pages is None else min(pages, mm.vm_accounted)
    mm.vm_accounted -= k
    vm_unacct_memory(m, k)
    return k


def vm_unacct_exit(m: "Machine", mm: MM) -> int:
    """exit_mmap: every VM_ACCOUNT mapping goes, and the mm's shmem objects die with it."""
    k = mm.vm_accounted + mm.shmem_accounted
    mm.vm_accounted = mm.shmem_accounted = 0
    vm_unacct_memory(m, k)
    return k
