"""fork's share of commit accounting (kernel/fork.c copy_mm -> dup_mm -> dup_mmap, Linux 5.10).

A child that does not share the parent's mm gets a copy of every VMA, and dup_mmap charges
each VM_ACCOUNT VMA of the parent to Committed_AS again -- checked against the *parent's*
mm (``security_vm_enough_memory_mm(oldmm, len)``).  That is why, with
``vm.overcommit_memory = 2``, a large process cannot fork even to exec something tiny.

The model keeps no VMAs, so the parent's accounted pages are checked in one request.  It
decides the same as the kernel's VMA-by-VMA loop: the charges only grow, so every step of
the loop passes iff the last one (everything charged) does; and when a step fails, the
kernel tears the half-built mm down, giving back what the earlier steps charged.

The child's mm starts empty as before (no pages are copied; copy-on-write is not modelled);
it only carries the charge, which its exit or a ``free`` gives back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import gfp as G
from .mempolicy import alloc_pages_policy
from .page_alloc_slow import __alloc_pages_nodemask
from .task import MM
from .util import ENOMEM, security_vm_enough_memory_mm, vm_acct_memory

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .mmzone import Zone
    from .task import Task


def dup_mm(m: "Machine", task: "Task") -> "MM | None":
    """A new mm for a child of ``task`` with the parent's accounted mappings charged again;
    None (-ENOMEM) if the commit check refuses them."""
    oldmm = task.mm
    mm = MM(len(m.zones))
    m.mms.add(mm)
    if dup_mmap(m, task, mm, oldmm):
        m.mms.discard(mm)  # mmput of the half-built mm: nothing stays charged
        return None
    return mm


def dup_mmap(m: "Machine", task: "Task", mm: MM, oldmm: "MM | None") -> int:
    charge = oldmm.vm_accounted if oldmm is not None else 0
    if not charge:
        return 0  # no VM_ACCOUNT VMA: nothing to check
    if m.overcommit_heuristic == "2.4":
        # 2.4's dup_mmap did not call vm_enough_memory() (its callers were brk, mmap, mremap
        # and shmem); the model still keeps the counter in step
        vm_acct_memory(m, charge)
        mm.vm_accounted += charge
        return 0
    if security_vm_enough_memory_mm(m, task, oldmm, charge, charge_to=mm):
        return -ENOMEM
    return 0


# --- what a new task costs, and the limits on how many there may be (kernel/fork.c, kernel/pid.c)

EAGAIN = 11
THREAD_SIZE = 16384        # x86-64's kernel stack (no KASAN): 4 pages, vmalloc'ed one by one
TASK_SLAB_PAGES = 2        # task_struct (~7-10 KiB with its FPU state), cred, pid, signal, sighand, files
PGD_PAGES = 1              # a new mm's page global directory (mm_alloc_pgd)
STACK = "stack"            # task.kmem's name for the stack: "kernel" pages, and NR_KERNEL_STACK_KB
PID_MAX_DEFAULT = 32768    # include/linux/threads.h
PID_MAX_LIMIT = 4 * 1024 * 1024   # 64-bit: 4M pids at most
PIDS_PER_CPU_DEFAULT = 1024
RESERVED_PIDS = 300        # a wrapped pid search starts here again
MIN_THREADS = 20
MAX_THREADS = 0x3FFFFFFF   # FUTEX_TID_MASK


def pid_max_default(cpus: int) -> int:
    """pid_idr_init: the compiled-in default, raised to 1024 pids per possible CPU."""
    return min(PID_MAX_LIMIT, max(PID_MAX_DEFAULT, PIDS_PER_CPU_DEFAULT * cpus))


def set_max_threads(totalram_pages: int, page_size: int) -> int:
    """set_max_threads: thread structures may take at most 1/8 of RAM; clamped."""
    threads = totalram_pages * page_size // (THREAD_SIZE * 8)
    return max(MIN_THREADS, min(MAX_THREADS, threads))


def alloc_pid(m: "Machine") -> int:
    """alloc_pid: the next free number after the last one given, wrapping to RESERVED_PIDS
    past pid_max (idr_alloc_cyclic); 0 when every number is taken (fork: -EAGAIN)."""
    used = m.pids_in_use
    if len(used) >= m.pid_max - 1:
        return 0
    pid = m.next_pid
    while pid in used or pid >= m.pid_max:
        pid = RESERVED_PIDS if pid >= m.pid_max else pid + 1
    used.add(pid)
    m.next_pid = pid + 1
    m.nr_threads += 1
    return pid


def task_kmem_pages(clone_vm: bool) -> int:
    """Kernel memory a new task holds while it lives: its stack and task structures, and
    a new mm's pgd (not for a thread, which shares its parent's mm)."""
    return THREAD_SIZE // 4096 + TASK_SLAB_PAGES + (0 if clone_vm else PGD_PAGES)


def fork_limit(m: "Machine", parent: "Task") -> int:
    """copy_process's task-count checks, in its order: 0, or -EAGAIN.

    RLIMIT_NPROC counts the tasks of the parent's user (init's limit is max_threads / 2;
    root and CAP_SYS_ADMIN/CAP_SYS_RESOURCE are exempt); then nr_threads >= max_threads."""
    if (parent.uid != 0 and not parent.caps & {"CAP_SYS_ADMIN", "CAP_SYS_RESOURCE"}
            and m.user_tasks.get(parent.uid, 0) >= m.nproc_rlimit):
        return -EAGAIN
    if m.nr_threads >= m.max_threads:
        return -EAGAIN
    return 0


def task_counted(m: "Machine", task: "Task") -> None:
    """A new task joins its user's count (the pid and nr_threads came with alloc_pid)."""
    m.user_tasks[task.uid] = m.user_tasks.get(task.uid, 0) + 1


def release_task(m: "Machine", task: "Task") -> None:
    """The task is gone: its pid, its count and its kernel memory (stack, task_struct,
    pgd) are given back.  The model frees them at exit; nobody waits for zombies."""
    m.pids_in_use.discard(task.pid)
    m.nr_threads -= 1
    n = m.user_tasks.get(task.uid, 0) - 1
    if n > 0:
        m.user_tasks[task.uid] = n
    else:
        m.user_tasks.pop(task.uid, None)
    free_task_kmem(m, task, task.kmem)
    task.kmem = []


def free_task_kmem(m: "Machine", cur: "Task", kmem: list) -> None:
    for zone, kind, pages in kmem:
        if kind == STACK:
            account_kernel_stack(zone, -1)
            kind = "kernel"
        zone.nr[kind] -= pages
        m.free_to_buddy(cur, zone, pages)


def account_kernel_stack(zone: "Zone", account: int) -> None:
    """kernel/fork.c account_kernel_stack: NR_KERNEL_STACK_KB of the stack's node grows
    (``account`` 1) or shrinks (-1) by THREAD_SIZE.  Only stacks: the task structures are
    slab, and a new mm's pgd is in no counter of the Mem-Info block (x86-64 5.10 and 6.1
    allocate it with __get_free_pages, outside NR_PAGETABLE)."""
    zone.node.kernel_stack_kb += account * (THREAD_SIZE // 1024)


async def dup_task_kmem(m: "Machine", cur: "Task", clone_vm: bool) -> list | None:
    """dup_task_struct's allocations (the task_struct, a THREAD_SIZE stack) and, for a new
    mm, its pgd: GFP_KERNEL requests that may reclaim and call the OOM killer like any
    other.  None (-ENOMEM) when one fails; what was taken is given back.

    Simplification: the kmem is not charged to the memcg (__GFP_ACCOUNT is not modelled
    here)."""
    want = [(STACK, THREAD_SIZE // 4096), ("slab_unreclaimable", TASK_SLAB_PAGES)]
    if not clone_vm:
        want.append(("kernel", PGD_PAGES))
    got: list = []
    for kind, pages in want:
        zone = await __alloc_pages_nodemask(m, cur, G.GFP_KERNEL, 0,
                                            *alloc_pages_policy(m, cur, G.GFP_KERNEL, vma=False),
                                            nr=pages, kind="kernel" if kind == STACK else kind)
        if zone is None:
            free_task_kmem(m, cur, got)
            return None
        if kind == STACK:
            account_kernel_stack(zone, 1)
        got.append((zone, kind, pages))
    return got
