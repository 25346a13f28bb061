"""Creating and removing mappings, as far as commit accounting sees them (mm/mmap.c, Linux 5.10).

The model has no VMAs: an ``alloc`` step of kind ``anon`` or ``shmem`` *is* one mmap, and
a ``free`` step one munmap of anonymous memory.  What matters here is which mappings are
charged to Committed_AS (Documentation/mm/overcommit-accounting.rst):

* private writable anonymous memory: its size, at mmap time (``accountable_mapping``);
* shared anonymous memory is shmem: the whole object, once, when it is set up
  (``shmem_acct_size`` in mm/shmem.c), not per mapping;
* kernel allocations are not mappings and are never charged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .util import ENOMEM, security_vm_enough_memory_mm, vm_unacct_exit, vm_unacct_munmap

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .task import MM, Task


def accountable_mapping(kind: str) -> bool:
    """VM_ACCOUNT: private and writable (and not MAP_NORESERVE, which no step asks for)."""
    return kind == "anon"


def shmem_acct_size(m: "Machine", task: "Task", mm: "MM", pages: int) -> int:
    """mm/shmem.c: a (not VM_NORESERVE) shmem object is charged whole when it is created,
    against the creator's mm; it is given back when the object dies -- here, with the mm."""
    return security_vm_enough_memory_mm(m, task, mm, pages, charge_to=mm, field="shmem_accounted")


def mmap_region(m: "Machine", task: "Task", mm: "MM", pages: int, kind: str) -> int:
    """The accounting part of mmap_region: 0, or -ENOMEM with nothing mapped.

    The check runs before the mapping exists, so the user reserve is judged on total_vm
    *without* the new pages; vm_stat_account then grows total_vm."""
    if accountable_mapping(kind):
        if security_vm_enough_memory_mm(m, task, mm, pages, charge_to=mm):
            return -ENOMEM
    elif kind == "shmem":
        # shmem_zero_setup -> shmem_kernel_file_setup -> shmem_acct_size
        if shmem_acct_size(m, task, mm, pages):
            return -ENOMEM
    mm.total_vm += pages  # vm_stat_account
    return 0


def munmap_unaccount(m: "Machine", mm: "MM", pages: int | None) -> int:
    """do_munmap -> unmap_region/remove_vma_list: accounted pages unmapped are given back
    (``None``: every anonymous mapping)."""
    return vm_unacct_munmap(m, mm, pages)


def exit_mmap_unaccount(m: "Machine", mm: "MM") -> int:
    """exit_mmap: vm_unacct_memory(nr_accounted) for every VM_ACCOUNT VMA torn down."""
    return vm_unacct_exit(m, mm)
