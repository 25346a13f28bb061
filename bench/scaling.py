"""Figure 6: how a run's cost grows with tasks, CPUs and simulated time (printed, not asserted).

The pressure workload (bench/pressure.py, its four groups scaled to the task count) runs
in a fresh subprocess per point, which reports wall time, CPU time (time.process_time),
events and its max RSS.  Three sweeps, each varying one axis from the base point
(1,000 tasks, 64 CPUs, 10 s):

* tasks: 10, 100, 1,000, 5,000
* CPUs: 4, 16, 64, 256
* simulated seconds: 10, 60, 300

For each sweep the exponent b of ``y = a * x**b`` is fitted by least squares on log-log
axes for CPU time, events, CPU time per event and RSS.  Cost per event should stay flat
(exponent near 0) as the work grows.  ``--quick`` (used by run_all.py) shrinks the base
point to 5 s and the time sweep to 5/10/20 s.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _child(tasks: int, cpus: int, seconds: int) -> dict:
    import time

    from memory import peak_rss_mib

    sys.path.insert(0, HERE)
    import pressure
    from oomactors import sim
    from oomactors.config import parse_config
    cfg = parse_config(pressure.config_text(seconds, cpus=cpus, tasks=tasks), "<bench scaling>")
    w0, c0 = time.perf_counter(), time.process_time()
    r = sim.run(cfg)
    return {"tasks": tasks, "cpus": cpus, "sim_s": seconds, "events": r.events,
            "wall": time.perf_counter() - w0, "cpu": time.process_time() - c0,
            "max_rss_mib": peak_rss_mib()}


def point(tasks: int, cpus: int, seconds: int) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(tasks), str(cpus),
                          str(seconds)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(max(y, 1e-12)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den if den else float("nan")


def sweep(name: str, key: str, points: list[dict]) -> dict:
    xs = [p[key] for p in points]
    print(f"  {name}:")
    for p in points:
        print(f"    {key}={p[key]:<6} wall {p['wall']:7.2f}s  cpu {p['cpu']:7.2f}s  events {p['events']:>10,}  "
              f"{1e6 * p['cpu'] / max(1, p['events']):6.1f} us/event  max RSS {p['max_rss_mib']:7.1f} MiB")
    fits = {f: exponent(xs, [p[f] if f != "us_per_event" else p["cpu"] / max(1, p["events"]) for p in points])
            for f in ("cpu", "events", "us_per_event", "max_rss_mib")}
    print("    fitted exponents: " + "  ".join(f"{f} ~ {key}^{b:.2f}" for f, b in fits.items()))
    return fits


def main(quick: bool = False) -> dict:
    base_s = 5 if quick else 10
    times = (5, 10, 20) if quick else (10, 60, 300)
    fits = {}
    fits["tasks"] = sweep("tasks (64 CPUs, %d s)" % base_s, "tasks",
                          [point(n, 64, base_s) for n in (10, 100, 1000, 5000)])
    fits["cpus"] = sweep("CPUs (1,000 tasks, %d s)" % base_s, "cpus",
                         [point(1000, c, base_s) for c in (4, 16, 64, 256)])
    fits["sim_s"] = sweep("simulated seconds (1,000 tasks, 64 CPUs)", "sim_s",
                          [point(1000, 64, s) for s in times])
    return fits


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_child(*(int(a) for a in sys.argv[2:5]))))
    else:
        main("--quick" in sys.argv)
