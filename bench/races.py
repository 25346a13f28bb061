"""The race catalogue, measured: how many runs each scheduler needs to find each race.

For every ``configs/races/<switch>.toml`` (the switch is off in the file) and the
invariant its comment names (``oomactors explore ... --check NAME --fixed-seed``):

* the **plain run**: the config's own seed under the default schedule -- ``clean`` for a
  race (only a perturbed schedule shows it), ``violated`` for a scenario test;
* **runs to find it**, per scheduler (``random``, ``pct``, ``hypothesis`` and any other
  search :data:`oomactors.explore.SEARCHES` offers, e.g. ``exhaustive``): ``--seeds``
  searches with the config's seed held (``--fixed-seed``: only the schedule moves) and
  scheduler seeds 0, 1, ..., each of at most ``--budget`` runs, no shrinking; the run at
  which each search found the violation (1: the unperturbed first run) as median
  (min-max), and how many of the searches found it.  PCT and exhaustive at the depth
  ``oomactors explore`` defaults them to (3 and 2).  A search whose scheduler draws
  nothing at random (exhaustive) is run once;
* **with the fix**: ``--on-budget`` random runs from scheduler seed 0 with every
  catalogue invariant and the switch back on, which must find nothing.

    .venv/bin/python bench/races.py                          # every entry, every scheduler
    .venv/bin/python bench/races.py --seeds 3 oom_lock reaper_delay
    .venv/bin/python bench/races.py --schedulers random,pct

The last lines are the markdown table of docs/races.md.  Run counts are deterministic
(virtual time, seeded schedulers); only the wall times vary.
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
from oomactors.explore import SEARCHES, explore  # noqa: E402

RACES = ROOT / "configs" / "races"
CHECK = re.compile(r"^#\s+oomactors explore (\S+) --check (\S+) --fixed-seed\s*$", re.M)
# what must hold with the switch on (the bounds as the race configs' commands give them)
ALL_CHECKS = ["single_pending_victim", "no_unnecessary_kill", "victim_exit_bound:2s",
              "alloc_progress_bound:2s", "no_reap_during_exit", "oom_lock_exclusion",
              "no_unkillable_killed", "no_fault_after_reap",
              "no_memcg_oom_by_dying_task"]
# races whose runs stall for seconds of virtual time (the bounded checkers must wait):
# their "on" budget is capped to keep the benchmark short
SLOW = {"oom_reaper": 10, "mmf_oom_skip": 10}
# searches that draw nothing at random: one search says it all
DETERMINISTIC = {"exhaustive"}
# each search's depth as `oomactors explore` defaults it (PCT's d; exhaustive's N picks)
DEPTH = {"pct": 3, "exhaustive": 2}


def race_check(switch: str) -> str:
    found = CHECK.findall((RACES / f"{switch}.toml").read_text(encoding="utf-8"))
    if len(found) != 1:
        raise SystemExit(f"configs/races/{switch}.toml: expected one "
                         f"`oomactors explore ... --check NAME --fixed-seed` line")
    return found[0][1]


def measure(switch: str, schedulers: list[str], seeds: int, budget: int, on_budget: int) -> dict:
    cfg = load_config(RACES / f"{switch}.toml")
    check = race_check(switch)
    row: dict = {"switch": switch, "check": check, "profile": cfg.kernel.profile, "seed": cfg.run.seed,
                 "budget": budget, "by": {}}
    for sched in schedulers:
        found, missed, wall = [], 0, 0.0
        for k in range(1 if sched in DETERMINISTIC else seeds):
            t0 = time.perf_counter()
            res = explore(cfg, [check], sched, budget=budget, seed=k, vary_seed=False, shrink_budget=0,
                          depth=DEPTH.get(sched, 3))
            wall += time.perf_counter() - t0
            if res.violation is not None and res.violation.invariant == check:
                found.append(res.violation.found_at)
            else:
                missed += 1
            stats = getattr(res, "exhaustive", None)  # the exhaustive search's own account
        row["by"][sched] = {"found": found, "missed": missed, "wall": wall,
                            "exhausted": stats.get("exhausted") if sched in DETERMINISTIC and stats else None}
    first = [n for r in row["by"].values() for n in r["found"]]
    row["plain"] = "violated" if first and min(first) == 1 else "clean"
    on = min(on_budget, SLOW.get(switch, on_budget))
    t0 = time.perf_counter()
    res_on = explore(cfg, ALL_CHECKS, "random", budget=on, seed=0, vary_seed=False, fixes={switch: True})
    row.update(on_runs=res_on.runs, on_violation=res_on.violation, on_wall=time.perf_counter() - t0)
    return row


def cell(r: dict) -> str:
    """median (min-max), and how many searches found it when not all did."""
    f, searches = r["found"], len(r["found"]) + r["missed"]
    if not f:
        if r.get("exhausted") is not None:  # a deterministic search: did it cover its space?
            return "none in its space" if r["exhausted"] else "not found within the budget"
        return f"not found (0/{searches})"
    text = f"{statistics.median(f):g} ({min(f)}-{max(f)})" if len(f) > 1 else f"{f[0]}"
    if r["missed"]:
        text += f", {len(f)}/{searches}"
    return text


def table(rows: list[dict], schedulers: list[str]) -> list[str]:
    out = ["| entry | invariant (`--check`) | plain run | " + " | ".join(schedulers) + " | with the fix |",
           "| --- | --- | --- | " + " | ".join("---" for _ in schedulers) + " | --- |"]
    for r in rows:
        on = f"{r['on_runs']} runs, {'clean' if r['on_violation'] is None else r['on_violation'].invariant}"
        cells = " | ".join(cell(r["by"][s]) for s in schedulers)
        out.append(f"| `{r['switch']}` | `{r['check']}` | {r['plain']} | {cells} | {on} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("switches", nargs="*", help="catalogue entries to measure (default: all)")
    ap.add_argument("--schedulers", default=",".join(SEARCHES),
                    help=f"comma-separated searches (default: {','.join(SEARCHES)})")
    ap.add_argument("--seeds", type=int, default=5, help="searches per entry and scheduler (default 5)")
    ap.add_argument("--budget", type=int, default=200, help="runs per search at most (default 200)")
    ap.add_argument("--on-budget", type=int, default=50,
                    help=f"runs with the switch on (capped at {SLOW} for the stalling scenarios)")
    args = ap.parse_args()
    switches = args.switches or list(FIXES)
    for s in switches:
        if s not in FIXES:
            raise SystemExit(f"unknown switch {s!r} (known: {', '.join(FIXES)})")
    schedulers = [s for s in args.schedulers.split(",") if s]
    for s in schedulers:
        if s not in SEARCHES:
            raise SystemExit(f"unknown scheduler {s!r} (known: {', '.join(SEARCHES)})")
    print(f"{os.cpu_count()} CPUs; seed held (--fixed-seed); {args.seeds} searches per entry and "
          f"scheduler, at most {args.budget} runs each; with the fix: {args.on_budget} runs")
    t_start = time.perf_counter()
    rows = []
    for s in switches:
        r = measure(s, schedulers, args.seeds, args.budget, args.on_budget)
        rows.append(r)
        found = "; ".join(f"{k} found at {v['found']}, {v['missed']} missed, {v['wall']:.1f}s"
                          for k, v in r["by"].items())
        print(f"  {s:<24} plain run at seed {r['seed']}: {r['plain']}; {found}; with the fix: "
              f"{r['on_runs']} runs, {'clean' if r['on_violation'] is None else r['on_violation']} "
              f"({r['on_wall']:.1f}s)", flush=True)
    print()
    print("\n".join(table(rows, schedulers)))
    print(f"\ntotal wall time {time.perf_counter() - t_start:.1f}s")


if __name__ == "__main__":
    main()
