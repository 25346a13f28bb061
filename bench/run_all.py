"""Run the oomactors benchmarks and print their figures (no assertions).

    .venv/bin/python bench/run_all.py              # all figures (a few minutes on 2 shared cores)
    .venv/bin/python bench/run_all.py --profile pressure
        # cProfile top-N (by tottime) of one benchmark instead
        # (fastpath1, fastpath32, pressure, peer, peer-lite, explore, vsleep1, vsleep1000, checkpoint)

Times are CPU times (time.process_time) and the minimum of REPEATS runs: the machine is
shared.  See bench/README.md for what each figure means and the goals.  The race
catalogue's figures (bench/races.py) and the full scaling sweep (bench/scaling.py without
--quick) are run on their own.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastpath  # noqa: E402
import memory  # noqa: E402
import event_kinds  # noqa: E402
import peer_simpy  # noqa: E402
import peer_simpy_lite  # noqa: E402
import pressure  # noqa: E402
import scaling  # noqa: E402
import vsleep  # noqa: E402

REPEATS = 3                      # every timed figure: the best (min CPU time) of this many runs
FASTPATH_N = {1: 200_000, 32: 50_000}
VSLEEP = ((1, 50_000), (10, 10_000), (100, 1_500), (1000, 150))   # (K actors, jiffies)
CHECKPOINTS = 200_000
EXPLORE_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "parallel-oom.toml")
EXPLORE_BUDGET = 30

GOAL_FASTPATH = 1_000_000        # requests / CPU s
GOAL_PEER_RATIO = 1.0            # pressure sim-s per CPU-s, over the SimPy peer's
GOAL_EXPLORE = 15.0              # explore runs per CPU s on configs/parallel-oom.toml
GOAL_VSLEEP_SLOWDOWN = 2.0       # bare checkpoints/s divided by virtual sleeps/s
GOAL_RSS_RATIO = 1.10            # max RSS of the longer run over the shorter one


def _best(fn, key: str, repeats: int = REPEATS, low: bool = False) -> dict:
    """The best of ``repeats`` runs by ``key`` (highest, or lowest with ``low``)."""
    return _pick([fn() for _ in range(repeats)], key, low)


def _pick(runs: list[dict], key: str, low: bool = False) -> dict:
    """The best of ``runs`` by ``key``, with every run's ``key`` under "all"."""
    runs = list(runs)
    runs.sort(key=lambda r: r[key], reverse=not low)
    best = dict(runs[0])
    best["all"] = [r[key] for r in runs]
    return best


def _ok(ok: bool) -> str:
    return "met" if ok else "MISSED"


def explore_runs(budget: int = EXPLORE_BUDGET) -> dict:
    """`oomactors explore configs/parallel-oom.toml --check oom_lock_exclusion` (the lock
    is fixed in that config, so every run of the budget is made): runs per CPU second."""
    from oomactors.config import load_config
    from oomactors.explore import explore
    cfg = load_config(EXPLORE_CONFIG)
    t0 = time.process_time()
    res = explore(cfg, ["oom_lock_exclusion"], "random", budget=budget, seed=0)
    cpu = time.process_time() - t0
    return {"runs": res.runs, "cpu": cpu, "runs_per_cpu_s": res.runs / cpu,
            "found": res.violation is not None}


def main(quick_scaling: bool = True) -> None:
    t_start = time.perf_counter()
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"CPU times, best of {REPEATS}")
    rows: list[tuple[str, str, str, str]] = []

    # --- 1. fast path ----------------------------------------------------------------
    print("\n[1] fast-path allocations (one task, plenty of free memory, "
          f"free every {fastpath.FREE_EVERY} requests)")
    for nr in (1, 32):
        n = FASTPATH_N[nr]
        r = _best(lambda: fastpath.bench(n, nr), "req_per_s")
        print(f"  nr={nr:<2}  {n} requests  cpu {r['wall']:.3f}s  "
              f"{r['req_per_s']:,.0f} req/s  {r['pages_per_s']:,.0f} pages/s  "
              f"(allocs only: {r['alloc_only_req_per_s']:,.0f} req/s; frees take "
              f"{100 * r['free_share']:.0f}% of the loop)  failed={r['failed']}  "
              f"slowpath_enter={r['slowpath']}")
        print(f"         req/s of {REPEATS} runs: " + ", ".join(f"{x:,.0f}" for x in r["all"]))
        goal = _ok(r["req_per_s"] >= GOAL_FASTPATH) if nr == 1 else "-"
        rows.append((f"fast path nr={nr} req/CPU-s", f"{r['req_per_s']:,.0f}",
                     f">= {GOAL_FASTPATH:,}" if nr == 1 else "-", goal))
        rows.append((f"fast path nr={nr} slowpath_enter", str(r["slowpath"]), "0",
                     _ok(r["slowpath"] == 0)))

    # --- 2. pressure scenario against the SimPy peer ----------------------------------
    print(f"\n[2] pressure: 64 CPUs, 1,000 tasks, 8GiB RAM + 1GiB swap, {pressure.DURATION_S} "
          "simulated s, trace written; beside a plain SimPy model of the same work (bench/peer_simpy.py)")
    # one run of each in turn, REPEATS times: the load of the shared machine hits all three alike
    runs = [(pressure.bench(), peer_simpy.bench(pressure.DURATION_S),
             peer_simpy.bench(pressure.DURATION_S, peer_simpy_lite.Peer)) for _ in range(REPEATS)]
    p, s, lite = (_pick([r[i] for r in runs], "sim_per_cpu") for i in range(3))
    ratio = p["sim_per_cpu"] / s["sim_per_cpu"]
    print(f"  oomactors  {p['sim_per_cpu']:6.2f} sim-s/CPU-s  (cpu {p['cpu']:.2f}s; runs "
          + ", ".join(f"{x:.2f}" for x in p["all"]) + f")  events={p['events']:,} "
          f"({p['events'] / p['cpu']:,.0f}/CPU-s)  oom_kills={p['oom_kills']}  "
          f"oom_invocations={p['oom_invocations']}  reason={p['reason']}")
    print(f"  SimPy peer {s['sim_per_cpu']:6.2f} sim-s/CPU-s  (cpu {s['cpu']:.2f}s; runs "
          + ", ".join(f"{x:.2f}" for x in s["all"]) + f")  events={s['events']:,}  "
          f"oom_kills={s['oom_kills']}  oom_invocations={s['oom_invocations']}")
    print(f"  peer-lite  {lite['sim_per_cpu']:6.2f} sim-s/CPU-s  (cpu {lite['cpu']:.2f}s; runs "
          + ", ".join(f"{x:.2f}" for x in lite["all"]) + f")  events={lite['events']:,}  "
          f"(the coarser session-2 peer, bench/peer_simpy_lite.py: for transparency)")
    print(f"  oomactors / peer = {ratio:.2f}x   oomactors / peer-lite = "
          f"{p['sim_per_cpu'] / lite['sim_per_cpu']:.2f}x   (virtual sleeps {p['sleeps']:,}, "
          f"~{p['sleeps_per_jiffy']:.1f} per jiffy; decision points {p['decisions']:,})")
    print("  events per kind (one more, untimed run of each):")
    event_kinds.table(pressure.DURATION_S)
    rows.append(("pressure sim-s / CPU-s", f"{p['sim_per_cpu']:.2f}", "-", "-"))
    rows.append(("SimPy peer sim-s / CPU-s", f"{s['sim_per_cpu']:.2f}", "-", "-"))
    rows.append(("SimPy peer-lite sim-s / CPU-s", f"{lite['sim_per_cpu']:.2f}", "-", "-"))
    rows.append(("pressure / peer", f"{ratio:.2f}x", f">= {GOAL_PEER_RATIO:g}x", _ok(ratio >= GOAL_PEER_RATIO)))
    rows.append(("pressure / peer-lite", f"{p['sim_per_cpu'] / lite['sim_per_cpu']:.2f}x", "-", "-"))
    rows.append(("pressure OOM kills", str(p["oom_kills"]), "> 1 (repeated)", _ok(p["oom_kills"] > 1)))

    # --- 3. explore ----------------------------------------------------------------------
    print(f"\n[3] explore {os.path.relpath(EXPLORE_CONFIG)} --check oom_lock_exclusion, "
          f"random search, budget {EXPLORE_BUDGET}")
    e = _best(explore_runs, "runs_per_cpu_s")
    print(f"  {e['runs']} runs in {e['cpu']:.2f} CPU-s = {e['runs_per_cpu_s']:.1f} runs/CPU-s  "
          f"(runs: " + ", ".join(f"{x:.1f}" for x in e["all"]) + f")  violation found: {e['found']}")
    rows.append(("explore runs / CPU-s", f"{e['runs_per_cpu_s']:.1f}", f">= {GOAL_EXPLORE:g}",
                 _ok(e["runs_per_cpu_s"] >= GOAL_EXPLORE)))

    # --- 4. virtual sleeps vs bare checkpoints ---------------------------------------
    print("\n[4] virtual sleeps (Sched/Clock + sim._drive) vs bare trio.lowlevel.checkpoint()")
    cp = _best(lambda: vsleep.bare_checkpoints(CHECKPOINTS), "per_s")
    print(f"  bare checkpoint loop: {CHECKPOINTS} in {cp['wall']:.3f}s = {cp['per_s']:,.0f}/s")
    for k, jiffies in VSLEEP:
        v = vsleep.virtual_sleeps(k, jiffies)
        slow = cp["per_s"] / v["per_s"]
        print(f"  K={k:<5} {jiffies:>6} jiffies  {v['sleeps']:,} sleeps in {v['wall']:.3f}s = "
              f"{v['per_s']:,.0f}/s   checkpoint/sleep ratio {slow:.2f}x")
        rows.append((f"virtual sleeps/s K={k}", f"{v['per_s']:,.0f} ({slow:.2f}x)",
                     f"<= {GOAL_VSLEEP_SLOWDOWN:g}x", _ok(slow <= GOAL_VSLEEP_SLOWDOWN)))

    # --- 5. memory -----------------------------------------------------------------------
    print("\n[5] max RSS by simulated duration (each run in a fresh subprocess, trace written)")
    mem = memory.main()
    for key, label in (("quickstart_ratio", "quickstart RSS 10h / 1h"), ("pressure_ratio", "pressure RSS 40s / 10s")):
        rows.append((label, f"{mem[key]:.3f}", f"<= {GOAL_RSS_RATIO:g}", _ok(mem[key] <= GOAL_RSS_RATIO)))

    # --- 6. scaling ----------------------------------------------------------------------
    print(f"\n[6] scaling (bench/scaling.py{' --quick' if quick_scaling else ''}; each point a fresh subprocess)")
    fits = scaling.main(quick=quick_scaling)
    for axis, f in fits.items():
        rows.append((f"CPU time per event ~ {axis}^b", f"b = {f['us_per_event']:.2f}", "~ 0 (flat)", "-"))

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
        "peer": lambda: peer_simpy.bench(pressure.DURATION_S),
        "peer-lite": lambda: peer_simpy.bench(pressure.DURATION_S, peer_simpy_lite.Peer),
        "explore": lambda: explore_runs(),
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
    ap.add_argument("--profile", metavar="NAME", choices=("fastpath1", "fastpath32", "pressure", "peer", "peer-lite",
                                                           "explore", "vsleep1", "vsleep1000", "checkpoint"))
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--full-scaling", action="store_true", help="the full scaling sweep (slow)")
    args = ap.parse_args()
    if args.profile:
        profile(args.profile, args.top)
    else:
        main(quick_scaling=not args.full_scaling)
