"""The kernel's own victim selection, as kill policies.

``linux`` is ``select_bad_process`` of the run's kernel profile: every candidate in scan
order through ``oom_evaluate_task`` and the era's ``oom_badness``, exactly as
mm/oom_kill.c does (:func:`oomactors.kernel.oom_kill.select_bad_process_in`).  It is the
default policy of every run.  ``linux-2.4``, ``linux-2.6.36``, ``linux-3.10``, ``linux-4.14``,
``linux-4.19`` and ``linux-5.10`` pin an era's badness and tie rule whatever the run's profile is, to ask
"what would that kernel have picked here?".
"""

from __future__ import annotations

from typing import ClassVar

from .api import Decision, KillPolicy, OomContext


class Linux(KillPolicy):
    """The selection of the run's kernel profile (5.10 by default)."""

    name = "linux"
    description = "the run's kernel: select_bad_process with its era's oom_badness"
    era: ClassVar[str | None] = None
    # select_bad_process_in aborts on any pending victim among the candidates: the kernel
    # model may find that out before it builds the candidates' views (oom_kill.pending_victim)
    aborts_on_pending_victim: ClassVar[bool] = True

    def select(self, ctx: OomContext) -> Decision:
        # imported here: the kernel model imports policies.api while it loads
        from oomactors.kernel.oom_kill import select_bad_process_in
        from oomactors.kernel.profiles import PROFILES
        return select_bad_process_in(ctx, PROFILES[self.era or ctx.profile])

    # the kernel model may run this very loop over its tasks without building the views
    # (oom_select.select_bad_process_tasks): a subclass that overrides select loses the mark
    select.kernel_loop = True  # type: ignore[attr-defined]


def _era(profile: str, summary: str) -> type[Linux]:
    return type(f"Linux_{profile.replace('-', '_').replace('.', '_')}", (Linux,), {
        "name": profile, "era": profile, "description": summary,
        "__doc__": f"The kernel's selection with {profile}'s badness and tie rule."})


Linux24 = _era("linux-2.4", "2.4 badness: total_vm over roots of CPU and run time, root/nice factors")
Linux2636 = _era("linux-2.6.36", "2.6.36-3.4 badness: per-mille of RAM+swap, root bonus 30, clamped 1..1000")
Linux310 = _era("linux-3.10", "3.5-3.13 badness: pages incl. page tables, root -30 on adj, adj*totalpages/1000, "
                              "at least 1, first of equals")
Linux414 = _era("linux-4.14", "3.14-4.16 badness: pages less 3% for root, adj*totalpages/1000, at least 1, "
                              "first of equals")
Linux419 = _era("linux-4.19", "4.17-5.8 badness: pages + adj*totalpages/1000, at least 1, first of equals")
Linux510 = _era("linux-5.10", "5.9+ badness: signed pages + adj*totalpages/1000, ties to the later task")
