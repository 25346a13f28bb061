"""`trace show` throughput: MB of trace file rendered per CPU-second.

A trace of the pressure workload (bench/pressure.py, 64 CPUs, 1,000 tasks) is written once,
then rendered to a null writer by the per-event path `trace show` used before
(decode() + text_line()/json_line(), one write per line) and by the batched,
precompiled path it uses now, side by side in one process; CPU time, min of 3 runs.
Goal (issue 11): at least 20 MB/s for the text output.

    .venv/bin/python bench/trace_show.py [SIMULATED_SECONDS]
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pressure  # noqa: E402

from oomactors.config import parse_config  # noqa: E402
from oomactors.sim import run  # noqa: E402
from oomactors.trace.render import json_line, render_trace_json, render_trace_text, text_line  # noqa: E402
from oomactors.trace.ftrace import render_ftrace  # noqa: E402
from oomactors.trace.stream import TraceWriter, decode, read_trace  # noqa: E402


class _Null(io.TextIOBase):
    def write(self, s: str) -> int:
        return len(s)


def _old(tr, line) -> None:
    out = _Null()
    for rec in tr.records():
        out.write(line(decode(tr, rec)) + "\n")


def _cpu(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main(seconds: int = 10) -> None:
    cfg = parse_config(pressure.config_text(seconds), "<bench trace_show>")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "pressure.trace")
        with TraceWriter(path, seed=cfg.run.seed, hz=cfg.kernel.hz, config=cfg.as_dict()) as w:
            run(cfg, sinks=[w.write])
        tr = read_trace(path)
        mb = os.path.getsize(path) / 1e6
        n = sum(1 for _ in tr.records())
        print(f"trace: {mb:.2f} MB, {n} events ({seconds} simulated s of bench/pressure.py)")
        rows = [
            ("read records only", lambda: sum(1 for _ in tr.records())),
            ("text, before (decode + text_line per event)", lambda: _old(tr, text_line)),
            ("text, now (trace show)", lambda: render_trace_text(tr.names, tr.fields, tr.hz, tr.records(), _Null())),
            ("json, before (decode + json_line per event)", lambda: _old(tr, json_line)),
            ("json, now (trace show --json)",
             lambda: render_trace_json(tr.names, tr.fields, tr.hz, tr.records(), _Null())),
            ("ftrace (trace show --format ftrace)", lambda: render_ftrace(tr, _Null())),
        ]
        for label, fn in rows:
            cpu = _cpu(fn)
            print(f"{label:48s} {cpu:7.3f} CPU-s  {mb / cpu:7.1f} MB/s  {n / cpu / 1e3:8.0f}k events/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
