"""Run the oomactors benchmarks and print their figures (no assertions).

    /work/main/.venv/bin/python bench/run_all.py              # all figures, ~40 s
    /work/main/.venv/bin/python bench/run_all.py --profile pressure
        # cProfile top-N (by tottime) of one benchmark instead
        # (fastpath1, fastpath32, pressure, vsleep1, vsleep1000, checkpoint)

See bench/README.md for what each figure means and the goals.  The race catalogue's
figures (bench/races.py, about 40 CPU seconds) are run on their own.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastpath  # noqa: E402
import pressure  # noqa: E402
import vsleep  # noqa: E402

REPEATS = 3                      # fast-path and checkpoint figures: median of this many runs
FASTPATH_N = {1: 200_000, 32: 50_000}
VSLEEP = ((1, 50_000), (10, 10_000), (100, 1_500), (1000, 150))   # (K actors, jiffies)
CHECKPOINTS = 200_000

GOAL_FASTPATH = 500_000          # requests / wall s
GOAL_SIM_PER_WALL = 10.0         # simulated s / wall s
GOAL_VSLEEP_SLOWDOWN = 2.0       # bare checkpoints/s divided by virtual sleeps/s


def _median_run(fn, key: str, repeats: int = REPEATS) -> dict:
    runs = [fn() for _ in range(repeats)]
    runs.sort(key=lambda r: r[key])
    med = dict(runs[len(runs) // 2])
    med["all"] = [r[key] for r in runs]
    return med


def _ok(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    t_start = time.perf_counter()
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    rows: list[tuple[str, str, str, str]] = []

    # --- 1. fast path ----------------------------------------------------------------
    print("\n[1] fast-path allocations (one task, plenty of free memory, "
          f"free every {fastpath.FREE_EVERY} requests)")
    for nr in (1, 32):
        n = FASTPATH_N[nr]
        r = _median_run(lambda: fastpath.bench(n, nr), "req_per_s")
        print(f"  nr={nr:<2}  {n} requests  wall {r['wall']:.3f}s  "
              f"{r['req_per_s']:,.0f} req/s  {r['pages_per_s']:,.0f} pages/s  "
              f"(allocs only: {r['alloc_only_req_per_s']:,.0f} req/s; frees take "
              f"{100 * r['free_share']:.0f}% of the loop)  failed={r['failed']}  "
              f"slowpath_enter={r['slowpath']}")
        print(f"         req/s of {REPEATS} runs: " + ", ".join(f"{x:,.0f}" for x in r["all"]))
        goal = _ok(r["req_per_s"] >= GOAL_FASTPATH) if nr == 1 else "-"
        rows.append((f"fast path nr={nr} req/s", f"{r['req_per_s']:,.0f}",
                     f">= {GOAL_FASTPATH:,}" if nr == 1 else "-", goal))
        rows.append((f"fast path nr={nr} pages/s", f"{r['pages_per_s']:,.0f}", "-", "-"))
        rows.append((f"fast path nr={nr} slowpath_enter", str(r["slowpath"]), "0",
                     _ok(r["slowpath"] == 0)))

    # --- 2. pressure scenario --------------------------------------------------------
    print(f"\n[2] pressure: 64 CPUs, 1,000 tasks, 8GiB RAM + 1GiB swap, "
          f"{pressure.DURATION_S} simulated s")
    p = pressure.bench()
    print(f"  reason={p['reason']}  simulated {p['sim_s']:.1f}s in {p['wall']:.2f}s wall  "
          f"= {p['sim_per_wall']:.2f} sim-s/wall-s")
    print(f"  events={p['events']:,}  ({p['events'] / p['wall']:,.0f}/wall-s)  "
          f"oom_kills={p['oom_kills']}  oom_invocations={p['oom_invocations']}  "
          f"tasks created={p['tasks']}")
    print(f"  virtual sleeps={p['sleeps']:,}  (~{p['sleeps_per_jiffy']:.1f} per jiffy)  "
          f"sched_switch={p['switches']:,}  slowpath_enter={p['slowpaths']:,}")
    rows.append(("pressure sim-s / wall-s", f"{p['sim_per_wall']:.2f}", f">= {GOAL_SIM_PER_WALL:g}",
                 _ok(p["sim_per_wall"] >= GOAL_SIM_PER_WALL)))
    rows.append(("pressure wall time", f"{p['wall']:.2f} s", "-", "-"))
    rows.append(("pressure events", f"{p['events']:,}", "-", "-"))
    rows.append(("pressure OOM kills", str(p["oom_kills"]), "> 0 (repeated)",
                 _ok(p["oom_kills"] > 1)))

    # --- 3. virtual sleeps vs bare checkpoints ---------------------------------------
    print("\n[3] virtual sleeps (Sched/Clock + sim._drive) vs bare trio.lowlevel.checkpoint()")
    cp = _median_run(lambda: vsleep.bare_checkpoints(CHECKPOINTS), "per_s")
    print(f"  bare checkpoint loop: {CHECKPOINTS} in {cp['wall']:.3f}s = {cp['per_s']:,.0f}/s  "
          f"(runs: " + ", ".join(f"{x:,.0f}" for x in cp["all"]) + ")")
    rows.append(("bare trio checkpoints/s", f"{cp['per_s']:,.0f}", "-", "-"))
    for k, jiffies in VSLEEP:
        v = vsleep.virtual_sleeps(k, jiffies)
        slow = cp["per_s"] / v["per_s"]
        print(f"  K={k:<5} {jiffies:>6} jiffies  {v['sleeps']:,} sleeps in {v['wall']:.3f}s = "
              f"{v['per_s']:,.0f}/s   checkpoint/sleep ratio {slow:.2f}x")
        rows.append((f"virtual sleeps/s K={k}", f"{v['per_s']:,.0f} ({slow:.2f}x)",
                     f"<= {GOAL_VSLEEP_SLOWDOWN:g}x", _ok(slow <= GOAL_VSLEEP_SLOWDOWN)))

    # --- table -----------------------------------------------------------------------
    w = [max(len(r[i]) for r in rows + [("figure", "value", "goal", "goal?")]) for i in range(4)]
    line = "-+-".join("-" * x for x in w)
    print(f"\n{line}")
    for r in [("figure", "value", "goal", "goal?")] + rows:
        print(" | ".join(c.ljust(w[i]) if i != 1 else c.rjust(w[i]) for i, c in enumerate(r)))
        if r[0] == "figure":
            print(line)
    print(line)
    print(f"total bench wall time {time.perf_counter() - t_start:.1f}s")


def profile(name: str, top: int) -> None:
    import cProfile
    import pstats

    jobs = {
        "fastpath1": lambda: fastpath.bench(100_000, 1),
        "fastpath32": lambda: fastpath.bench(30_000, 32),
        "pressure": lambda: pressure.bench(),
        "vsleep1": lambda: vsleep.virtual_sleeps(1, 30_000),
        "vsleep1000": lambda: vsleep.virtual_sleeps(1000, 100),
        "checkpoint": lambda: vsleep.bare_checkpoints(100_000),
    }
    prof = cProfile.Profile()
    result = prof.runcall(jobs[name])
    print({k: v for k, v in result.items() if not isinstance(v, list)})
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", metavar="NAME",
                    choices=("fastpath1", "fastpath32", "pressure", "vsleep1", "vsleep1000", "checkpoint"))
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    if args.profile:
        profile(args.profile, args.top)
    else:
        main()
