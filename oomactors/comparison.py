"""``oomactors compare``: run every (config, policy, seed) and compare the outcomes.

Each run is an ordinary seeded simulation (:func:`oomactors.sim.run`); everything measured
here is computed from the run's events alone, as they happen, by the online aggregator of
:mod:`oomactors.run_metrics` (it keeps running figures and per-process state, not the
events), so the same numbers come out of a live run and of a trace read back from disk
(the PSI totals of a trace come from its last ``sim:psi`` sample, when it has one).

Definitions (also in the README, "Comparing policies"):

* **killed processes** -- one per process an OOM killer killed: the kernel's
  ``sim:oom_kill`` (one per process, memory.oom.group members included), the processes it
  killed because they shared the victim's mm (``sim:oom_kill_shared``), 2.4's page-fault
  kill (``sim:vm_killing``), and a userspace killer's victims: a process it signalled
  (``userspace:kill``, or one per process of a ``userspace:cgroup_kill``) that then died of
  the signal.  A process killed twice (SIGTERM then SIGKILL, or a second OOM while it
  exits) counts once; a new process that got a dead one's pid is another process.
* **the hog** -- the task name (comm) whose processes together asked for the most memory
  in ``alloc`` steps (``sim:step``) before the first kill or the first stall, whichever came
  first: up to that moment every policy sees the same run, so the hog is a property of the
  workload and the seed, not of the policy.  If nobody allocated by then, the whole run
  counts; ties go to the name of the lowest pid; a run where nobody allocated has no hog.
* **collateral** -- killed processes whose name is not the hog's.
* **memory freed per kill** -- for a kernel kill, the victim's resident memory (anon + file
  + shmem, from the kill event) plus its swap entries (from the OOM report's task table);
  for a userspace kill, the RSS and swap its kill event carries; in MiB, averaged over the kills that have
  a size (2.4's page-fault kill has none).  A process that only shared a victim's mm
  frees nothing of its own.
* **stalls** -- the intervals tasks spend stalled on memory: direct reclaim (global and
  memcg, begin to end) and throttling (``sim:throttle``: congestion_wait, memory.high).
* **first pressure** -- the start of the first stall.  **recovery** -- the end of the last
  stall, or the last kill when no stall followed it.  A run that panicked, was stalling
  when it ended, or recovered less than a second (:data:`RECOVERY_QUIET_S`) before it was
  cut off (any end but ``idle``), never recovered: its recovery is the run's end, flagged.
* **stall time** -- the total time PSI's system-wide memory ``some`` and ``full`` states
  were held (:func:`oomactors.psi.psi_totals`).

The JSON schema is in :func:`as_json`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import interrupt
from .errors import InputError
# the metrics of one run, computed online (re-exported: the API and the tests read them here)
from .run_metrics import (Killed, RunMetrics, collateral, freed_per_kill_mib, hog,  # noqa: F401
                          killed_processes, recovery, run_metrics, stall_intervals, stall_totals)

# the numbers aggregated over seeds (median, min, max), in table order
METRICS: tuple[str, ...] = ("kills", "collateral", "freed_per_kill_mib", "pressure_to_recovery_s",
                            "stall_some_s", "stall_full_s", "alloc_failures", "panic")


# --- aggregation --------------------------------------------------------------------------
def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Median, min and max of each metric over the runs that have a value (None if none)."""
    out: dict[str, dict[str, Any]] = {"median": {}, "min": {}, "max": {}}
    for key in METRICS:
        vals = [r[key] for r in runs if r[key] is not None]
        if not vals:
            for agg in out.values():
                agg[key] = None
            continue
        med = statistics.median(vals)
        out["median"][key] = round(med, 6) if isinstance(med, float) else med
        out["min"][key] = min(vals)
        out["max"][key] = max(vals)
    out["median"]["recovered"] = sum(1 for r in runs if r["recovered"])
    return out


# --- running ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    config: str     # as given on the command line
    policy: str
    seed: int


def load_configs(paths: Sequence[str]) -> dict[str, Any]:
    from .config import load_config
    from .sim import check_boot
    return {p: check_boot(load_config(p), p) for p in paths}


def plan(cfgs: dict[str, Any], specs: Sequence[str]) -> dict[str, list[str]]:
    """The policies each config runs with: ``specs``, or (none given) the config's own
    ``[policy]`` name, else ``linux``.  Every (config, policy) is loaded once here, so an
    unknown policy or a bad parameter stops the comparison before the first run."""
    from policies.registry import policy_for
    out = {}
    for path, cfg in cfgs.items():
        own = [cfg.policy.name if cfg.policy is not None else "linux"]
        out[path] = list(dict.fromkeys(specs)) or own
        for spec in out[path]:
            policy_for(cfg, spec)
    return out


def run_one(cfg: Any, job: Job) -> dict[str, Any]:
    """One run's metrics.  A policy that fails mid-run is an InputError naming it, the
    config and the seed."""
    from policies.registry import policy_for

    from . import sim
    policy = policy_for(cfg, job.policy)   # a fresh instance per run: daemons keep state
    metrics = RunMetrics()   # fed as the run goes: nothing of the run is kept but its figures
    try:
        result = sim.run(cfg, seed=job.seed, policy=policy, sinks=[metrics.feed], psi=True)  # stall totals
    except InputError as err:
        raise InputError(f"{job.config}, seed {job.seed}: {err}") from None
    interrupt.check()  # Ctrl-C ended the run: no metrics from half a run
    return metrics.result(hz=result.hz, seed=job.seed, reason=result.reason, psi_source=result)


def _worker(unit: tuple[Any, Job]) -> dict[str, Any]:
    """One (config, policy, seed) unit, on a worker: the config travels loaded (a worker
    on another machine need not have the file)."""
    cfg, job = unit
    try:
        return run_one(cfg, job)
    except InputError as err:  # subclasses with their own __init__ do not unpickle: a plain one
        raise InputError(str(err)) from None


def compare(config_paths: Sequence[str], specs: Sequence[str], seeds: Sequence[int], *,
            jobs: int = 1, progress: Callable[[int, int, Job], None] | None = None,
            cluster: str | None = None) -> dict[str, Any]:
    """Run every (config, policy, seed) and return the comparison (see :func:`as_json`);
    no ``specs``: each config's own policy (see :func:`plan`).  ``progress(done, total,
    job)`` is called before each run (in this process) or after each (``jobs`` > 1 or a
    Dask ``cluster``, see :mod:`oomactors.sweep`).  The result does not depend on where
    the runs ran."""
    from .sweep import Sweep

    config_paths = list(dict.fromkeys(config_paths))
    seeds = list(seeds)
    cfgs = load_configs(config_paths)
    policies = plan(cfgs, specs)
    todo = [Job(c, p, s) for c in config_paths for p in policies[c] for s in seeds]
    with Sweep(min(jobs, len(todo)) if cluster is None else jobs, cluster) as sweep:
        count = [0]

        def done(i: int, _result: Any) -> None:
            count[0] += 1
            if progress and sweep.parallel:
                progress(count[0], len(todo), todo[i])

        def one(unit: tuple[Any, Job]) -> dict[str, Any]:
            if progress:
                progress(count[0], len(todo), unit[1])
            return run_one(*unit)

        out = sweep.map(_worker if sweep.parallel else one, [(cfgs[j.config], j) for j in todo], done)
        if progress and todo and not sweep.parallel:
            progress(len(todo), len(todo), todo[-1])
    return as_json(policies, seeds, dict(zip(todo, out)))


def as_json(policies: dict[str, list[str]], seeds: Sequence[int],
            results: dict[Job, dict[str, Any]]) -> dict[str, Any]:
    """The comparison as one JSON-ready object::

        {"seeds": [0, 1, ...],
         "hog": "<how the hog is chosen>",
         "configs": [{"config": "<path as given>",
                      "policies": [{"policy": "<name or spec as given>",
                                    "runs": [<run metrics, one per seed, in seed order>],
                                    "median": {<metric>: value, "recovered": <runs recovered>},
                                    "min": {<metric>: value}, "max": {<metric>: value}}]}]}

    Run metrics: ``seed``, ``kills`` (= ``kernel_kills`` + ``userspace_kills``), ``killed``
    (``t`` s, ``pid``, ``comm``, ``by``, ``freed_mib``), ``hog``, ``collateral``,
    ``freed_per_kill_mib``, ``first_pressure_s``, ``recovery_s``, ``pressure_to_recovery_s``,
    ``recovered``, ``stall_some_s``, ``stall_full_s``, ``alloc_failures``, ``panic`` (0/1),
    ``end_reason``, ``simulated_seconds``.  Times are simulated seconds; null means "does
    not apply" (no kill, no pressure).  median/min/max cover :data:`METRICS` over the runs
    where the metric is not null."""
    out_configs = []
    for path, specs in policies.items():
        pols = []
        for spec in specs:
            runs = [results[Job(path, spec, s)] for s in seeds]
            pols.append({"policy": spec, "runs": runs, **aggregate(runs)})
        out_configs.append({"config": path, "policies": pols})
    return {"seeds": list(seeds), "hog": HOG_DEFINITION, "configs": out_configs}


HOG_DEFINITION = ("the task name whose processes asked for the most memory in alloc steps before the "
                  "first kill or stall (the whole run if nobody allocated by then); ties: lowest pid")


# --- the table ------------------------------------------------------------------------------
COLUMNS: tuple[tuple[str, str], ...] = (
    ("kills", "kills"), ("collateral", "collateral"), ("freed_per_kill_mib", "MiB freed/kill"),
    ("pressure_to_recovery_s", "pressure→recovery (s)"), ("stall_some_s", "stall some (s)"),
    ("stall_full_s", "stall full (s)"), ("alloc_failures", "alloc failures"))


def cell(pol: dict[str, Any], key: str) -> str:
    """``median (min–max)``; just the median when every seed agrees; ``–`` when none applies."""
    med, lo, hi = (_num(pol[agg][key], key) for agg in ("median", "min", "max"))
    if pol["median"][key] is None:
        return "–"
    return med if lo == hi else f"{med} ({lo}–{hi})"


def _num(v: Any, key: str) -> str:
    if v is None:
        return "–"
    if key.endswith("_s"):
        return f"{v:.3f}"
    if key.endswith("_mib"):
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def tables(data: dict[str, Any]) -> list[Any]:
    """One rich table per config: a row per policy."""
    from collections import Counter

    from rich.table import Table
    n = len(data["seeds"])
    out = []
    for conf in data["configs"]:
        hogs = sorted({r["hog"] or "none" for p in conf["policies"] for r in p["runs"]})
        t = Table(title=f"{conf['config']} — {_seed_range(data['seeds'])}, hog: {', '.join(hogs)}",
                  title_justify="left", caption="median (min–max) over seeds; – : does not apply",
                  caption_justify="left")
        t.add_column("policy")
        for _key, head in COLUMNS:
            t.add_column(head, justify="right")
        t.add_column("recovered", justify="right")
        t.add_column("panics", justify="right")
        t.add_column("end")
        for pol in conf["policies"]:
            ends = Counter(r["end_reason"] for r in pol["runs"])
            end = ", ".join(k if v == n else f"{k} ×{v}" for k, v in sorted(ends.items()))
            t.add_row(pol["policy"], *(cell(pol, k) for k, _h in COLUMNS),
                      f"{pol['median']['recovered']}/{n}", f"{sum(r['panic'] for r in pol['runs'])}/{n}", end)
        out.append(t)
    return out


def _seed_range(seeds: Sequence[int]) -> str:
    if not seeds:
        return "none"
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {seeds[0]}–{seeds[-1]}"
