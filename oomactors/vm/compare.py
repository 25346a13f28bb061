"""``oomactors vm compare``: the kernel in QEMU and the model, side by side, one verdict.

The verdict is the victims: the sequence of killed task names, the kills per task, and
whether the run panicked; overcommit refusals are counted too (a refusal instead of a kill
is an outcome).  Timing, points, constraints and memcg counters are shown, not judged.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .. import interrupt
from ..config import Config
from .session import calibrated_config, calibration, run_vm

MEMCG_SHOWN = ("high", "max", "oom", "oom_kill", "oom_group_kill")


def run_model(cfg: Config) -> dict[str, Any]:
    from .. import sim
    from ..events import EVENT_ID
    from ..report import EventTable, Summary

    summary = Summary(hz=cfg.kernel.hz)
    kills: list[tuple] = []   # the run's events stream by: keep only the kills
    kill_id = EVENT_ID["sim:oom_kill"]
    result = sim.run(cfg, seed=cfg.run.seed,
                     sinks=[summary.feed, lambda rec: kills.append(rec) if rec[1] == kill_id else None])
    out = summary.result(seed=cfg.run.seed, reason=result.reason)
    constraint = {}
    table = EventTable()
    for rec in kills:
        ev = table.decode(rec, result.hz)
        constraint[(ev["pid"], ev["t"])] = ev.get("constraint")
    for k in out["kills"]:
        k["constraint"] = constraint.get((k["pid"], k["t"]))
    return out


def number_instances(s: dict[str, Any]) -> None:
    """Give each kill the ``instance`` of its task among those of the same name, in pid
    (creation) order: which of two twins died, on both sides alike."""
    by_name: dict[str, list[int]] = {}
    for t in sorted(s["tasks"], key=lambda t: t["pid"]):
        by_name.setdefault(t["comm"], []).append(t["pid"])
    for k in s["kills"]:
        pids = by_name.get(k["comm"], [])
        k["instance"] = pids.index(k["pid"]) if k["pid"] in pids else None
        k["of"] = len(pids)


def _verdict_keys(s: dict[str, Any]) -> dict[str, Any]:
    victims = [k["comm"] for k in s["kills"]]
    return {"victims": victims, "kills_per_task": dict(Counter(victims)), "panic": s["panic"] is not None,
            "overcommit_refusals": s.get("overcommit_refusals", 0)}


def _survivors(s: dict[str, Any], names: set[str]) -> list[str]:
    """The workload's tasks still running at the end (the model's own init is not one)."""
    return sorted({t["comm"] for t in s["tasks"] if t["outcome"] == "running" and t["comm"] in names})


def _first_kill(s: dict[str, Any]) -> float | None:
    return s["kills"][0]["t"] if s["kills"] else None


def _memcg_events(s: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {p: {k: mc["events"].get(k, 0) for k in MEMCG_SHOWN} for p, mc in sorted(s.get("memcgs", {}).items())
            if p != "/"}


def differences(kernel: dict[str, Any], model: dict[str, Any]) -> list[str]:
    k, m = _verdict_keys(kernel), _verdict_keys(model)
    out = []
    if k["victims"] != m["victims"]:
        out.append(f"victims: kernel {k['victims']} vs model {m['victims']}")
    elif k["kills_per_task"] != m["kills_per_task"]:  # pragma: no cover - same sequence, same counts
        out.append(f"kills per task: kernel {k['kills_per_task']} vs model {m['kills_per_task']}")
    if k["panic"] != m["panic"]:
        out.append(f"panic: kernel {kernel['panic']!r} vs model {model['panic']!r}")
    if k["overcommit_refusals"] != m["overcommit_refusals"]:
        out.append(f"overcommit refusals: kernel {k['overcommit_refusals']} vs model {m['overcommit_refusals']}")
    return out


def compare(cfg: Config, kernel: str | None = None, timeout_s: float | None = None,
            console_path: str | None = None) -> dict[str, Any]:
    vm = run_vm(cfg, kernel, timeout_s, console_path)
    cal = calibration(cfg, vm)
    model_cfg = calibrated_config(cfg, cal, vm["profile"])
    model = run_model(model_cfg)
    if interrupt.requested():  # the engine stopped the model run at a safe place
        raise KeyboardInterrupt
    number_instances(vm)
    number_instances(model)
    diffs = differences(vm, model)
    vm.pop("console", None)
    return {"kernel": vm, "model": model, "calibration": cal, "agree": not diffs, "differences": diffs}


def rows(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The side-by-side table: (what, kernel, model)."""
    k, m = data["kernel"], data["model"]
    names = {t["comm"] for t in k["tasks"]}

    def kills(s: dict[str, Any]) -> str:
        return ", ".join(x["comm"] + (f"#{x['instance']}" if (x.get("of") or 0) > 1 else "")
                         for x in s["kills"]) or "(none)"

    def per_task(s: dict[str, Any]) -> str:
        c = Counter(x["comm"] for x in s["kills"])
        return ", ".join(f"{n}×{c[n]}" for n in sorted(c)) or "(none)"

    def points(s: dict[str, Any]) -> str:
        return ", ".join(f"{x['comm']} {x['points'] if x['points'] is not None else '?'}" for x in s["kills"]) or "-"

    def constraint(s: dict[str, Any]) -> str:
        return ", ".join(sorted({(x.get("constraint") or "?").removeprefix("CONSTRAINT_") for x in s["kills"]})) or "-"

    def memcg(s: dict[str, Any]) -> str:
        ev = _memcg_events(s)
        return "; ".join(f"{p} " + " ".join(f"{n}={v}" for n, v in e.items() if v) for p, e in ev.items()) or "-"

    def first(s: dict[str, Any]) -> str:
        t = _first_kill(s)
        return "-" if t is None else f"{t:.3f}s"

    out = [("victims (in order; #n: n-th of that name)", kills(k), kills(m)),
           ("kills per task", per_task(k), per_task(m)),
           ("points at each kill", points(k), points(m)),
           ("constraint", constraint(k), constraint(m)),
           ("memcg memory.events", memcg(k), memcg(m)),
           ("first kill (from the workload's start)", first(k), first(m)),
           ("overcommit refusals", str(k.get("overcommit_refusals", 0)), str(m.get("overcommit_refusals", 0))),
           ("panic", k["panic"] or "no", m["panic"] or "no"),
           ("survivors", ", ".join(_survivors(k, names)) or "(none)", ", ".join(_survivors(m, names)) or "(none)")]
    return out


def calibration_line(cal: dict[str, Any]) -> str:
    if not cal:
        return "calibrated: nothing (the guest printed no /proc/meminfo)"
    mib = 1 << 20
    return (f"calibrated the model's machine from the guest's /proc/meminfo before the workload: "
            f"reserved {cal['reserved'] / mib:.1f}MiB (RAM - MemTotal {cal['from']['MemTotal']}kB), "
            f"slab_unreclaimable {cal['slab_unreclaimable'] / mib:.1f}MiB (kernel and rootfs memory), "
            f"slab_reclaimable {cal['slab_reclaimable'] / mib:.1f}MiB, page_cache {cal['page_cache'] / mib:.1f}MiB")


def verdict_line(data: dict[str, Any]) -> str:
    if data["agree"]:
        n = len(data["kernel"]["kills"])
        return f"AGREE: the kernel and the model killed the same {n} task(s) in the same order"
    return "DISAGREE: " + "; ".join(data["differences"])
