"""Two kill policies shipped as a separate distribution, found through the
``oomactors.policies`` entry-point group.

``smallest-first`` is a well-behaved (if odd) policy with a parameter.  ``kill-unkillable``
is deliberately broken: it kills the task with oom_score_adj -1000, which the kernel
never does; the race-testing invariants must catch it.
"""

from pydantic import BaseModel, ConfigDict, Field

from policies.api import Kill, KillPolicy, NothingKillable, OOM_SCORE_ADJ_MIN


class SmallestFirst(KillPolicy):
    """Kill the smallest killable task whose RSS is at least ``min_rss_pages``."""

    name = "smallest-first"
    description = "the smallest killable task above min_rss_pages (an example plugin)"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        min_rss_pages: int = Field(1, ge=0)

    def select(self, ctx):
        pending = self.pending_victim(ctx)
        if pending is not None:
            return pending
        fit = [t for t in ctx.killable() if t.rss >= self.params.min_rss_pages]
        if not fit:
            return NothingKillable()
        best = min(fit, key=lambda t: (t.rss, t.pid))
        return Kill(best.pid, points=best.rss)


class KillUnkillable(KillPolicy):
    """Broken on purpose: prefers tasks with oom_score_adj -1000."""

    name = "kill-unkillable"
    test_only = True  # `oomactors policies` lists it only with --test-only
    description = "BROKEN on purpose: kills oom_score_adj -1000 tasks first (a test fixture)"

    def select(self, ctx):
        tasks = [t for t in ctx.candidates if "no_mm" not in t.flags and "oom_victim" not in t.flags]
        if not tasks:
            return NothingKillable()
        best = max(tasks, key=lambda t: (t.oom_score_adj == OOM_SCORE_ADJ_MIN, t.rss))
        return Kill(best.pid, points=best.rss)
