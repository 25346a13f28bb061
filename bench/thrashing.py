"""Figure 5: the cost of memory that is touched again (docs/thrashing.md).

Runs ``configs/thrashing.toml`` (two services sweeping 900MiB of working sets on a 1GiB
machine with swap, a batch job growing until the kernel kills it, 30 simulated seconds)
and, side by side in the same process, the same machine whose services touch their sets
once: the difference is what sweeping, swap-in and LRU aging cost.  Figures are CPU
seconds (``time.process_time``), the minimum of ``--repeats`` runs, plain
``oomactors.sim.run`` (no sinks, no checkers).

    .venv/bin/python bench/thrashing.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import time
import tomllib
from pathlib import Path

from oomactors.config import Config
from oomactors.sim import run

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "thrashing.toml"


def configs() -> dict[str, Config]:
    data = tomllib.loads(CONFIG.read_text())
    once = copy.deepcopy(data)
    for t in once["tasks"]:
        step = t["program"][0]
        if step["op"] == "access":
            t["program"] = [{"op": "access", "size": step["size"], "repeat": 1},
                            {"op": "sleep", "time": "100s"}]
    return {"thrashing": Config.model_validate(data), "touched once": Config.model_validate(once)}


def bench(cfg: Config, repeats: int) -> dict:
    best = None
    for _ in range(repeats):
        t0 = time.process_time()
        r = run(cfg)
        cpu = time.process_time() - t0
        if best is None or cpu < best["cpu"]:
            v = r.machine.vmstat
            best = {"cpu": cpu, "sim_s": r.end_jiffies / r.hz, "events": len(r.records),
                    "pswpin": v["pswpin"], "refaults": v["workingset_refault_anon"],
                    "decisions": r.decisions}
    assert best is not None
    best["sim_per_cpu"] = best["sim_s"] / best["cpu"]
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"{'run':<14} {'sim s':>6} {'CPU s':>7} {'sim-s/CPU-s':>12} {'events':>8} "
          f"{'decisions':>10} {'pswpin':>8}")
    for name, cfg in configs().items():
        b = bench(cfg, args.repeats)
        print(f"{name:<14} {b['sim_s']:>6.1f} {b['cpu']:>7.2f} {b['sim_per_cpu']:>12.2f} "
              f"{b['events']:>8,} {b['decisions']:>10,} {b['pswpin']:>8,}")


if __name__ == "__main__":
    main()
