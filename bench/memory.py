"""Figure 5: peak memory (max RSS) of a run does not grow with its simulated duration.

Each figure is one run in a fresh Python subprocess that reports its own peak resident set
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after the run: the quickstart config
(``stop_when_idle = false``) for 1 h and 10 h of simulated time, and the pressure workload
(bench/pressure.py) for two durations.  Both stream their trace to a temporary file, as
``oomactors run --trace`` does.  **Goal: the two quickstart figures within 10 % of each
other; the pressure run's independent of its duration.**
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _child(kind: str, seconds: int) -> dict:
    import resource
    import tempfile
    import time

    sys.path.insert(0, HERE)
    from oomactors import sim
    from oomactors.trace.stream import TraceWriter

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
            # Linux reports ru_maxrss in KiB
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


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
        print(f"  {kind:<10} {seconds:>6} sim-s  {r['events']:>10,} events  cpu {r['cpu']:7.2f}s  "
              f"max RSS {r['max_rss_mib']:7.1f} MiB")
    return rows


QUICKSTART = (("quickstart", 3600), ("quickstart", 36000))
PRESSURE = (("pressure", 10), ("pressure", 40))


def main(quick: bool = False) -> dict:
    q = report(list(QUICKSTART if not quick else (("quickstart", 360), ("quickstart", 3600))))
    p = report(list(PRESSURE if not quick else (("pressure", 5), ("pressure", 15))))
    qr = q[1]["max_rss_mib"] / q[0]["max_rss_mib"]
    pr = p[1]["max_rss_mib"] / p[0]["max_rss_mib"]
    print(f"  quickstart RSS ratio {q[1]['sim_s']}s/{q[0]['sim_s']}s = {qr:.3f}   "
          f"pressure RSS ratio {p[1]['sim_s']}s/{p[0]['sim_s']}s = {pr:.3f}")
    return {"quickstart": q, "pressure": p, "quickstart_ratio": qr, "pressure_ratio": pr}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], int(sys.argv[3]))))
    else:
        main("--quick" in sys.argv)
