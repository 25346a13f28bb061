"""The cpuset updater: writes new mems into cpusets at the times the config gives
(``[[cpuset_updates]]``), while tasks keep allocating -- the LTP cpuset01 pattern.

It is a kernel-side task without an mm (never an OOM candidate).  It waits off-CPU until
the next write is due, takes a CPU and runs update_nodemask, which rewrites the mems of
every task of the cpuset inside its write seqcount (see :mod:`oomactors.kernel.cpuset`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..kernel.cpuset import update_nodemask
from ..units import to_jiffies

if TYPE_CHECKING:  # pragma: no cover
    from ..kernel.task import Task
    from ..machine import Machine

COMM = "cpuset_update"


def spawn_cpuset_updater(m: "Machine") -> None:
    """Start the updater if the config has writes (after the workload: its pid comes last)."""
    if not m.cfg.cpuset_updates:
        return
    from .user import new_process
    task = new_process(m, COMM, 0, frozenset(), 0, kthread=True)
    m.spawn(cpuset_updater, m, task)


async def cpuset_updater(m: "Machine", task: "Task") -> None:
    # writes in time order; two writes at the same time happen in config order
    writes = sorted(m.cfg.cpuset_updates, key=lambda u: to_jiffies(u.at, m.hz))
    for upd in writes:
        at = to_jiffies(upd.at, m.hz)
        if at > m.now:
            await m.sched.clock.sleep_until(at)
        await m.sched.get_cpu(task)
        await update_nodemask(m, task, m.cpusets[upd.cpuset], frozenset(upd.mems))
        m.sched.put_cpu(task)
