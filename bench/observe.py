"""What looking at a run costs: the exports and plots of issue 11 on the pressure bench's
trace (64 CPUs, 1,000 tasks; 10 simulated seconds by default).

Prints CPU seconds (min of 3) and events per CPU second for: reading the trace, the
events data frame, the Perfetto export, Parquet, CSV and the timeline plot.  Needs the
optional extras (``pip install 'oomactors[all]'``).

    python bench/observe.py [SIM_SECONDS]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import oomactors  # noqa: E402
from pressure import config_text  # noqa: E402
from trace_show import _cpu  # noqa: E402  (CPU seconds of a call, min of 3)

REPEAT = 3


def cpu(fn) -> float:
    return _cpu(fn, REPEAT)


def main(seconds: int = 10) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        trace = os.path.join(d, "run.trace")
        run = oomactors.run(config_text(seconds), trace=trace)
        n = sum(1 for _ in run.records())
        out = {"events": n, "trace_bytes": os.path.getsize(trace)}

        def fresh() -> oomactors.Run:
            return oomactors.load_trace(trace)

        out["read_s"] = cpu(lambda: sum(1 for _ in fresh().records()))
        out["frame_s"] = cpu(lambda: fresh().events)
        out["perfetto_s"] = cpu(lambda: fresh().export(os.path.join(d, "run.pftrace")))
        out["pftrace_bytes"] = os.path.getsize(os.path.join(d, "run.pftrace"))
        out["parquet_s"] = cpu(lambda: fresh().export(os.path.join(d, "run.parquet")))
        out["csv_s"] = cpu(lambda: fresh().export(os.path.join(d, "run.csv")))
        out["plot_s"] = cpu(lambda: fresh().plot(os.path.join(d, "run.png")))
    return out


if __name__ == "__main__":
    res = main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
    n = res["events"]
    print(f"{n:,} events, trace {res['trace_bytes']:,} B, Perfetto file {res['pftrace_bytes']:,} B "
          f"(CPU seconds, min of {REPEAT}; parquet/csv/plot include building the events frame)")
    for key in ("read_s", "frame_s", "perfetto_s", "parquet_s", "csv_s", "plot_s"):
        print(f"  {key[:-2]:<9} {res[key]:7.2f} s   {n / res[key]:>10,.0f} events/s")
