"""Simple kernel-side policies: useful baselines to compare the kernel's choice with.

Each keeps the kernel's guard against over-kill (no second victim while one is still
exiting, :meth:`KillPolicy.pending_victim`) and never picks what the kernel never picks
(oom_score_adj -1000, reaped, no mm, in vfork): :meth:`OomContext.killable`.
"""

from __future__ import annotations

from .api import Decision, Kill, KillPolicy, NothingKillable, OomContext, TaskView
from .linux import Linux


class AllocatingTask(KillPolicy):
    """vm.oom_kill_allocating_task as a policy: kill the task that asked for memory."""

    name = "allocating-task"
    description = "kill the allocating task if it is killable, else fall back to the kernel's choice"

    def select(self, ctx: OomContext) -> Decision:
        pending = self.pending_victim(ctx)
        if pending is not None:
            return pending
        cur = ctx.current
        if cur is not None:
            mine = next((t for t in ctx.killable() if t.tgid == cur.tgid), None)
            if mine is not None:
                return Kill(mine.pid, mine.rss)
        return Linux().select(ctx)


class _Ranked(KillPolicy):
    """Kill the killable candidate with the highest ``rank``; report ``points``."""

    @staticmethod
    def rank(t: TaskView) -> tuple:  # pragma: no cover - overridden
        raise NotImplementedError

    @staticmethod
    def points(t: TaskView) -> int:
        return t.rss

    def select(self, ctx: OomContext) -> Decision:
        pending = self.pending_victim(ctx)
        if pending is not None:
            return pending
        tasks = ctx.killable()
        if not tasks:
            return NothingKillable()
        best = max(tasks, key=self.rank)
        return Kill(best.pid, self.points(best))


class LargestRss(_Ranked):
    """The biggest resident set, oom_score_adj ignored (but -1000 respected)."""

    name = "largest-rss"
    description = "the killable task with the largest RSS (anon+file+shmem), adj ignored"

    @staticmethod
    def rank(t: TaskView) -> tuple:
        return (t.rss + t.swapents, -t.pid)

    @staticmethod
    def points(t: TaskView) -> int:
        return t.rss + t.swapents


class Youngest(_Ranked):
    """The most recently started task: it has done the least work."""

    name = "youngest"
    description = "the killable task started last (ties: the highest pid)"

    @staticmethod
    def rank(t: TaskView) -> tuple:
        return (t.start_time, t.pid)
