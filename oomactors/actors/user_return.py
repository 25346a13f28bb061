"""Back to user space from a user task's kernel entry: a pending SIGKILL or a handled
SIGTERM leaves the program, -ENOMEM reaches it (exit, give the step up, or retry), a
fault's VM_FAULT_OOM goes through the OOM path, a step is held to its byte rate.  Shared
by the step modules (:mod:`oomactors.actors.user`, :mod:`oomactors.actors.user_files`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..kernel import params
from ..kernel.oom_kill import pagefault_out_of_memory
from ..kernel.task import PAGE_SIZE, Task

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine

ENOMEM = 12
EAGAIN = 11
EACCES = 13


class _Exit(Exception):
    """Leave the program: ``reason`` is 'exit' or 'killed'."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def ret_to_user(task: Task) -> None:
    """Return to user space: a pending SIGKILL is delivered here, and a handled SIGTERM
    leaves the program for its handler (:func:`oomactors.actors.user.sigterm_handler`)."""
    if task.sigkill:
        raise _Exit("killed")
    if task.sigterm:
        raise _Exit("sigterm")


async def vm_fault_oom(m: "Machine", task: Task) -> None:
    """VM_FAULT_OOM: the fault handler's OOM path, then back to user space, which re-executes
    the faulting instruction."""
    await pagefault_out_of_memory(m, task)
    ret_to_user(task)
    await m.sched.point(task, "fault.retry")
    await m.sched.run(task, params.SLOWPATH_ROUND_NS, "fault.retry")


async def _pace(m: "Machine", task: Task, start: int, done: int, rate: int) -> None:
    """Hold a step to its byte rate: sleep until the pages done so far are due."""
    now = m.now
    due = start + to_jiffies_pages(m, done, rate)
    if due > now:
        await m.sched.sleep(task, due - now, "task.rate", interruptible=True)
        ret_to_user(task)


async def _enomem(m: "Machine", task: Task, op: str, on_fail: str, errno: int = ENOMEM) -> bool:
    """-ENOMEM (or fork's -EAGAIN) reached the program: it exits, gives the step up (True),
    or pauses briefly (10 ms, rounded up to whole jiffies) and tries again (False)."""
    m.emit("sim:step_failed", task.pid, op, errno)
    if on_fail == "exit":
        raise _Exit("exit")
    if on_fail == "continue":
        return True
    await m.sched.sleep(task, -(-10 * m.hz // 1000), "task.enomem_retry", interruptible=True)
    ret_to_user(task)
    return False


def to_jiffies_pages(m: "Machine", pages: int, rate: int) -> int:
    return pages * PAGE_SIZE * m.hz // rate
