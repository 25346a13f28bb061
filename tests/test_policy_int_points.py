"""A kill policy's own subclass of int for its points is written as msgpack wrote it.

The trace writer encodes records with msgspec, which refuses subclasses of the builtin
types that msgpack-python packed by their value.  A user policy may answer
``Kill(pid, points)`` with ``points`` such a subclass (select_bad_process accepts any int):
the points land in the OOM report's records, so the writer's hook must encode them by
value (found by the session-5 review: the run ended in an internal error)."""

from __future__ import annotations

import msgpack

from oomactors import sim
from oomactors.config import load_config
from oomactors.events import EVENT_ID
from oomactors.trace.stream import TraceWriter, read_trace
from policies.api import Kill, KillPolicy, NothingKillable


class Points(int):
    """An int with a meaning, as a policy's author might write it."""


class LargestWithPoints(KillPolicy):
    name = "review5-largest"
    description = "the largest RSS, its points an int subclass"

    def select(self, ctx):
        live = [t for t in ctx.candidates if t.pid != 1 and t.rss > 0]
        if not live:
            return NothingKillable()
        best = max(live, key=lambda t: t.rss)
        return Kill(best.pid, Points(best.rss))


def test_a_policys_int_subclass_points_are_written_as_msgpack_wrote_them(tmp_path):
    cfg = load_config("configs/quickstart.toml")
    path = tmp_path / "run.trace"
    with TraceWriter(path, seed=0, hz=cfg.kernel.hz, config=cfg.as_dict()) as w:
        r = sim.run(cfg, seed=0, sinks=[w.write], keep_records=True, policy=LargestWithPoints())
    kills = [rec for rec in r.records if rec[1] == EVENT_ID["sim:oom_kill"]]
    assert kills, "the policy killed somebody (its points are in the kill's records)"
    # every record is in the file, as msgpack-python reads back what it packed
    assert [tuple(rec) for rec in read_trace(path).records()] == [tuple(msgpack.unpackb(
        msgpack.packb(rec, use_bin_type=True), use_list=False)) for rec in r.records]
