"""Figure 5: peak memory (max RSS) of a run does not grow with its simulated duration.

Each figure is one run in a fresh Python subprocess that reports its own peak resident set
after the run (``VmHWM`` of /proc/self/status: the high-water mark of the process's own
memory.  Not ``ru_maxrss``: Linux carries the pre-exec image's peak into it, so every child
of this bench would report at least the parent's size, 65 MiB, and hide any growth below
that): the quickstart config
(``stop_when_idle = false``) for 1 h and 10 h of simulated time, and the pressure workload
(bench/pressure.py) for two durations.  Both stream their trace to a temporary file, as
``oomactors run --trace`` does.  **Goal: the two quickstart figures within 10 % of each
other; the pressure run's independent of its duration.**

The same for ``oomactors compare`` (one seed, ``linux``, in this process as ``--jobs 1``
runs it) on the pressure workload at two durations: its metrics are online aggregates
(oomactors/run_metrics.py), so its peak too should not grow with the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def peak_rss_mib() -> float:
    """This process's peak resident set since its exec, in MiB (VmHWM, Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024   # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(kind: str, seconds: int) -> dict:
    import tempfile
    import time

    sys.path.insert(0, HERE)
    from oomactors import sim
    from oomactors.trace.stream import TraceWriter

    if kind == "compare":
        import pressure
        from oomactors.comparison import compare
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "pressure.toml")
            with open(path, "w") as f:
                f.write(pressure.config_text(seconds))
            t0 = time.process_time()
            data = compare([path], ["linux"], [1], jobs=1)
            cpu = time.process_time() - t0
        run = data["configs"][0]["policies"][0]["runs"][0]
        return {"kind": kind, "sim_s": seconds, "events": None, "cpu": cpu, "reason": run["end_reason"],
                "kills": run["kills"], "max_rss_mib": peak_rss_mib()}
    if kind == "quickstart":
        from oomactors.config import load_default
        cfg = load_default()
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"stop_when_idle": False})})
    else:
        import pressure
        from oomactors.config import parse_config
        cfg = parse_config(pressure.config_text(seconds), "<bench pressure>")
    with tempfile.TemporaryDirectory() as tmp:
        writer = TraceWriter(os.path.join(tmp, "t.trace"), seed=cfg.run.seed, hz=cfg.kernel.hz,
                             config=cfg.as_dict())
        t0 = time.process_time()
        r = sim.run(cfg, duration=seconds * cfg.kernel.hz, sinks=[writer.write])
        cpu = time.process_time() - t0
        writer.close()
    return {"kind": kind, "sim_s": seconds, "events": r.events, "cpu": cpu, "reason": r.reason,
            "max_rss_mib": peak_rss_mib()}


def measure(kind: str, seconds: int) -> dict:
    """One run in a fresh interpreter; its figures as a dict."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind, str(seconds)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(runs: list[tuple[str, int]]) -> list[dict]:
    rows = []
    for kind, seconds in runs:
        r = measure(kind, seconds)
        rows.append(r)
        what = f"{r['events']:>10,} events" if r["events"] is not None else f"{r['kills']:>10,} kills "
        print(f"  {kind:<10} {seconds:>6} sim-s  {what}  cpu {r['cpu']:7.2f}s  "
              f"max RSS {r['max_rss_mib']:7.1f} MiB")
    return rows


QUICKSTART = (("quickstart", 3600), ("quickstart", 36000))
PRESSURE = (("pressure", 10), ("pressure", 40))
COMPARE = (("compare", 20), ("compare", 80))


def _ratio(name: str, rows: list[dict]) -> float:
    r = rows[1]["max_rss_mib"] / rows[0]["max_rss_mib"]
    print(f"  {name} RSS ratio {rows[1]['sim_s']}s/{rows[0]['sim_s']}s = {r:.3f}")
    return r


def main(quick: bool = False) -> dict:
    q = report(list(QUICKSTART if not quick else (("quickstart", 360), ("quickstart", 3600))))
    p = report(list(PRESSURE if not quick else (("pressure", 5), ("pressure", 15))))
    c = report(list(COMPARE if not quick else (("compare", 20), ("compare", 40))))
    return {"quickstart": q, "pressure": p, "compare": c, "quickstart_ratio": _ratio("quickstart", q),
            "pressure_ratio": _ratio("pressure", p), "compare_ratio": _ratio("compare", c)}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], int(sys.argv[3]))))
    else:
        main("--quick" in sys.argv)
