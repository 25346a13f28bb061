"""Android's in-kernel lowmemorykiller (drivers/staging/android/lowmemorykiller.c, 2.6.29
to 4.12) as a kernel-side policy: ``lmk-adj-levels``.

The driver paired a table of free-memory levels (``minfree``, pages) with a table of
oom_score_adj floors (``adj``).  The first level that both the free pages and the page
cache are under sets the floor; the victim is the task with the highest oom_score_adj at
or above it, the largest RSS among equals.  Free pages count above totalreserve_pages, as
the driver's other_free does.  The driver ran from a shrinker, before the
OOM killer; here the same choice is made when the OOM killer runs.  When no task reaches
the floor (or memory is above every level) the driver killed nobody and left the rest to
the kernel's OOM killer: so does this policy, with the kernel's own choice.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .api import Decision, Kill, KillPolicy, OomContext
from .linux import Linux


class LmkParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # the driver's built-in defaults: lowmem_minfree {3*512, 2*1024, 4*1024, 16*1024}
    # pages and lowmem_adj {0, 1, 6, 12} in oom_adj units, i.e. oom_score_adj adj*1000/17
    minfree: tuple[int, ...] = Field((1536, 2048, 4096, 16384), min_length=1, max_length=6)
    adj: tuple[int, ...] = Field((0, 58, 352, 705), min_length=1, max_length=6)

    @model_validator(mode="after")
    def _same_length(self) -> "LmkParams":
        if len(self.minfree) != len(self.adj):
            raise ValueError(f"minfree has {len(self.minfree)} levels but adj has {len(self.adj)}")
        if any(not -1000 <= a <= 1000 for a in self.adj):
            raise ValueError("adj values must be oom_score_adj values in -1000..1000")
        if any(f < 0 for f in self.minfree):
            raise ValueError("minfree values are page counts, at least 0")
        return self


class LmkAdjLevels(KillPolicy):
    """Highest oom_score_adj at or above the floor the free-memory level sets."""

    name = "lmk-adj-levels"
    description = "Android's lowmemorykiller: minfree/adj levels, highest adj then largest RSS"
    Params = LmkParams

    def floor(self, ctx: OomContext) -> int | None:
        """The oom_score_adj floor of the first level both free and file pages are under."""
        # the driver's other_free and other_file: free pages above the reserves, and the
        # page cache without shmem (shmem is not in the model's page cache)
        other_free = ctx.free_pages - ctx.reserve_pages
        for minfree, adj in zip(self.params.minfree, self.params.adj):
            if other_free < minfree and ctx.file_pages < minfree:
                return adj
        return None

    def select(self, ctx: OomContext) -> Decision:
        pending = self.pending_victim(ctx)
        if pending is not None:
            return pending
        floor = self.floor(ctx)
        if floor is not None:
            eligible = [t for t in ctx.killable() if t.oom_score_adj >= floor]
            if eligible:
                best = max(eligible, key=lambda t: (t.oom_score_adj, t.rss, -t.pid))
                return Kill(best.pid, best.rss)
        return Linux().select(ctx)
