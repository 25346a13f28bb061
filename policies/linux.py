"""The kernel's own victim selection, as a kill policy.

``select_bad_process`` walks every process in creation order through
``oom_evaluate_task`` and ``oom_badness`` exactly as mm/oom_kill.c does.  It is the
default policy of every run; other policies plug in at the same place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oomactors.kernel import oom_kill

if TYPE_CHECKING:  # pragma: no cover
    from oomactors.kernel.oom_kill import OomControl
    from oomactors.kernel.task import Task
    from oomactors.machine import Machine


class Linux:
    """The selection of the run's kernel (Linux 5.10: highest oom_badness, ties to the later task)."""

    name = "linux"
    description = "the kernel's select_bad_process / oom_badness"

    def select_bad_process(self, m: "Machine", oc: "OomControl", cur: "Task") -> None:
        oom_kill.select_bad_process(m, oc, cur)
