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

from .task import MM
from .util import ENOMEM, security_vm_enough_memory_mm, vm_acct_memory

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
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
