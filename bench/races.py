"""The race catalogue, measured: how many schedules ``explore`` needs to find each race.

For every ``configs/races/<switch>.toml`` (the switch is off in the file) and the
invariant its comment names (``oomactors explore ... --check NAME``):

* with the switch off, ``explore`` (random scheduler) is run from ``--seeds`` starting
  points -- starting point k uses run.seed = k and scheduler seed k -- and the number of
  runs it took to find the violation is reported (median, min, max), with how it was
  found: by a plain run (``plain``: the unperturbed first run, or a later seed with no
  perturbation) or only under a perturbed schedule (``scheduler``);
* with the switch on, ``explore`` runs ``--on-budget`` schedules from run.seed 0 with
  every catalogue invariant and must find nothing.

    /work/main/.venv/bin/python bench/races.py              # ~1-2 min on 2 cores
    /work/main/.venv/bin/python bench/races.py --seeds 3 --on-budget 10 oom_lock cpuset_retry

The last lines are a markdown table, the one the README's "Race catalogue" reuses.
Figures are deterministic (virtual time, seeded schedulers); only the wall times vary.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oomactors.config import FIXES, load_config  # noqa: E402
from oomactors.explore import explore  # noqa: E402

RACES = ROOT / "configs" / "races"
CHECK = re.compile(r"^#\s+oomactors explore (\S+) --check (\S+)\s*$", re.M)
# what must hold with the switch on (the bounds as the race configs' commands give them)
ALL_CHECKS = ["single_pending_victim", "no_unnecessary_kill", "victim_exit_bound:2s",
              "alloc_progress_bound:2s", "no_reap_during_exit", "oom_lock_exclusion",
              "no_unkillable_killed", "no_fault_after_reap",
              "no_memcg_oom_by_dying_task"]
# races whose runs stall for seconds of virtual time (the bounded checkers must wait):
# their "on" budget is capped to keep the benchmark short
SLOW = {"oom_reaper": 10, "mmf_oom_skip": 10}


def race_check(switch: str) -> str:
    found = CHECK.findall((RACES / f"{switch}.toml").read_text(encoding="utf-8"))
    if len(found) != 1:
        raise SystemExit(f"configs/races/{switch}.toml: expected one `oomactors explore ... --check` line")
    return found[0][1]


def measure(switch: str, seeds: int, off_budget: int, on_budget: int) -> dict:
    cfg = load_config(RACES / f"{switch}.toml")
    check = race_check(switch)
    found, plain, walls, missed = [], [], [], 0
    for k in range(seeds):
        cfg_k = cfg.model_copy(update={"run": cfg.run.model_copy(update={"seed": k})})
        t0 = time.perf_counter()
        res = explore(cfg_k, [check], "random", budget=off_budget, seed=k)
        walls.append(time.perf_counter() - t0)
        if res.violation is None or res.violation.invariant != check:
            missed += 1
            continue
        found.append(res.violation.found_at)
        plain.append(not res.schedule)
    on = min(on_budget, SLOW.get(switch, on_budget))
    t0 = time.perf_counter()
    res_on = explore(cfg, ALL_CHECKS, "random", budget=on, seed=0, fixes={switch: True})
    on_wall = time.perf_counter() - t0
    return {"switch": switch, "check": check, "profile": cfg.kernel.profile, "found": found,
            "plain": plain, "missed": missed, "seeds": seeds, "off_budget": off_budget,
            "off_wall": statistics.median(walls) if walls else 0.0,
            "on_runs": res_on.runs, "on_violation": res_on.violation, "on_wall": on_wall}


def found_by(r: dict) -> str:
    """``plain run``: every search found it in its unperturbed first run; ``seed``: without
    any perturbation, but not always at the first seed; ``scheduler``: only under a
    perturbed schedule; ``seed or scheduler``: some searches one way, some the other."""
    if not r["found"]:
        return "-"
    if all(r["plain"]):
        return "plain run" if all(n == 1 for n in r["found"]) else "seed"
    return "scheduler" if not any(r["plain"]) else "seed or scheduler"


def schedules(r: dict) -> str:
    f = r["found"]
    if not f:
        return f"not found in {r['off_budget']} (x{r['seeds']})"
    text = f"{statistics.median(f):g} ({min(f)}-{max(f)})"
    if r["missed"]:
        text += f", {r['missed']} of {r['seeds']} missed in {r['off_budget']}"
    return text


def table(rows: list[dict]) -> list[str]:
    out = ["| switch | invariant (`--check`) | found by | schedules to find: median (min-max) "
           "| with the fix: schedules, violations |",
           "| --- | --- | --- | --- | --- |"]
    for r in rows:
        on = f"{r['on_runs']}, {'none' if r['on_violation'] is None else r['on_violation'].invariant}"
        out.append(f"| `{r['switch']}` | `{r['check']}` | {found_by(r)} | {schedules(r)} | {on} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("switches", nargs="*", help="catalogue entries to measure (default: all)")
    ap.add_argument("--seeds", type=int, default=5, help="starting points per race (default 5)")
    ap.add_argument("--off-budget", type=int, default=100, help="runs per search with the switch off")
    ap.add_argument("--on-budget", type=int, default=50,
                    help=f"runs with the switch on (capped at {SLOW} for the stalling races)")
    args = ap.parse_args()
    switches = args.switches or list(FIXES)
    for s in switches:
        if s not in FIXES:
            raise SystemExit(f"unknown switch {s!r} (known: {', '.join(FIXES)})")
    print(f"{os.cpu_count()} CPUs; {args.seeds} starting points per race, off budget {args.off_budget}, "
          f"on budget {args.on_budget}")
    t_start = time.perf_counter()
    rows = []
    for s in switches:
        r = measure(s, args.seeds, args.off_budget, args.on_budget)
        rows.append(r)
        print(f"  {s:<24} {r['check']:<26} off: found at runs {r['found']} (plain {r['plain']}), "
              f"{r['off_wall']:.2f}s wall per search; on: {r['on_runs']} runs, "
              f"{'no violation' if r['on_violation'] is None else r['on_violation']} ({r['on_wall']:.1f}s)",
              flush=True)
    print()
    print("\n".join(table(rows)))
    print(f"\ntotal wall time {time.perf_counter() - t_start:.1f}s")


if __name__ == "__main__":
    main()
