"""What looking at a run costs: the exports and plots of issue 11 on the pressure bench's
trace (64 CPUs, 1,000 tasks; 10 simulated seconds by default).

Prints CPU seconds (min of 3) and events per CPU second for: reading the trace, the
events data frame, the Perfetto export, Parquet, CSV and the timeline plot.  Then the
memory of ``trace export --format csv|parquet`` (streamed, batch by batch) against the
frame of the whole run written at once (what the export did before), each in a fresh
process (max RSS and CPU of that process), on ``configs/nofs-loop.toml`` run for 1 s and
10 s.  Needs the optional extras (``pip install 'oomactors[all]'``).

    python bench/observe.py [SIM_SECONDS] [--no-rss]
"""

from __future__ import annotations

import os
import subprocess
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


ROOT = Path(__file__).resolve().parent.parent
#: The whole run as one frame, flattened and written at once: the table export before it
#: streamed (and still the Python API's ``flat_events``).
_FRAME_EXPORT = ("import sys\n"
                 "from oomactors.api import load_trace\n"
                 "from oomactors.export.tables import flat_events\n"
                 "df = flat_events(load_trace(sys.argv[1]))\n"
                 "df.to_csv(sys.argv[2], index=False) if sys.argv[3] == 'csv' else "
                 "df.to_parquet(sys.argv[2], engine='pyarrow', index=False)\n")


# runs a Python command line (``-m MODULE ...`` or ``-c CODE ...``) and then writes this
# process's peak RSS since its exec (VmHWM, kB) to the file named by $OOMACTORS_BENCH_HWM:
# ru_maxrss would carry the bench's own pre-exec size into the child's figure
_PEAK = ("import os, runpy, sys\n"
         "out = os.environ['OOMACTORS_BENCH_HWM']\n"
         "def peak():\n"
         "    with open('/proc/self/status') as f, open(out, 'w') as o:\n"
         "        o.write(next(l.split()[1] for l in f if l.startswith('VmHWM:')))\n"
         "mode, what, *rest = sys.argv[1:]\n"
         "sys.argv = [what, *rest]\n"
         "try:\n"
         "    runpy.run_module(what, run_name='__main__') if mode == '-m' else exec(compile(what, '<bench>', 'exec'), {'__name__': '__main__'})\n"
         "finally:\n"
         "    peak()\n")


def _child(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) of one fresh process running ``cmd``, a Python
    command line: ``[sys.executable, "-m" | "-c", ...]``."""
    with tempfile.NamedTemporaryFile(suffix=".hwm") as hwm:
        env = dict(os.environ, OOMACTORS_BENCH_HWM=hwm.name)
        p = subprocess.Popen([cmd[0], "-c", _PEAK, *cmd[1:]], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)}: exit status {p.returncode}")
        return int(open(hwm.name).read()) / 1024, ru.ru_utime + ru.ru_stime


def export_rss(durations: tuple[str, ...] = ("1s", "10s")) -> list[dict]:
    """Max RSS and CPU of the table exports, streamed and whole-frame, per trace size."""
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for dur in durations:
            trace = os.path.join(d, f"nofs-{dur}.trace")
            oomactors.run(ROOT / "configs/nofs-loop.toml", duration=dur, trace=trace)
            row = {"duration": dur, "trace_bytes": os.path.getsize(trace)}
            for fmt in ("csv", "parquet"):
                out = os.path.join(d, f"out.{fmt}")
                row[f"{fmt}_stream"] = _child([sys.executable, "-m", "oomactors", "trace", "export",
                                               trace, "--format", fmt, "-o", out])
                row[f"{fmt}_bytes"] = os.path.getsize(out)
                row[f"{fmt}_frame"] = _child([sys.executable, "-c", _FRAME_EXPORT, trace, out, fmt])
            rows.append(row)
    return rows


def print_export_rss(rows: list[dict]) -> None:
    print("trace export, max RSS (MB) / CPU s of a fresh process: streamed (now) vs the whole "
          "run as one frame (before); configs/nofs-loop.toml")
    for r in rows:
        for fmt in ("csv", "parquet"):
            (sm, sc), (fm, fc) = r[f"{fmt}_stream"], r[f"{fmt}_frame"]
            print(f"  {r['duration']:>4} trace {r['trace_bytes'] / 1e6:6.1f} MB  {fmt:<8} "
                  f"streamed {sm:6.0f} MB {sc:6.2f} s   frame {fm:6.0f} MB {fc:6.2f} s   "
                  f"(output {r[f'{fmt}_bytes'] / 1e6:.1f} MB)")


if __name__ == "__main__":
    if "--no-rss" not in sys.argv:
        print_export_rss(export_rss())
    args = [a for a in sys.argv[1:] if a != "--no-rss"]
    res = main(int(args[0]) if args else 10)
    n = res["events"]
    print(f"{n:,} events, trace {res['trace_bytes']:,} B, Perfetto file {res['pftrace_bytes']:,} B "
          f"(CPU seconds, min of {REPEAT}; parquet/csv/plot include building the events frame)")
    for key in ("read_s", "frame_s", "perfetto_s", "parquet_s", "csv_s", "plot_s"):
        print(f"  {key[:-2]:<9} {res[key]:7.2f} s   {n / res[key]:>10,.0f} events/s")
