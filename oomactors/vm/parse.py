"""What the guest said, as the summary ``oomactors run --json`` prints.

Two streams come back: the kernel console (ttyS0) and the runner's event port (ttyS1:
the ``=meminfo`` / ``=zoneinfo`` dumps of ``/init`` before the workload, the runner's
``@ns pid what key=value`` lines, the ``=memcg PATH`` dumps of memory.events after it).

* kills: every ``Killed process P (comm)`` console line, timed by its printk stamp from the
  runner's start; the points of the victim are not printed by 5.1+ kernels, so they are
  computed from the report's task table (``oomactors.replay`` parses it) with the profile's
  badness and the report's totalpages;
* tasks: the runner's ``task``/``forked`` lines and the supervisor's ``died``/``exited``;
* overcommit refusals: the runner's ``enomem`` lines (mmap or fork refused);
* memcg events: the memory.events files dumped after the workload;
* panic: ``Kernel panic - not syncing: MESSAGE`` on the console.
"""

from __future__ import annotations

import re
from typing import Any

from ..kernel.memcontrol import MEMCG_EVENTS
from ..kernel.profiles import PROFILES
from ..oomlog import parse_log, strip_prefixes
from ..replay import build_context

_KILLED = re.compile(r"^\[\s*(\d+\.\d+)\]\s*(?:(?P<msg>[^:]*): )?Killed process (?P<pid>\d+) \((?P<comm>[^)]*)\)")
_PANIC = re.compile(r"Kernel panic - not syncing: (.*)$")
_EVENT = re.compile(r"^@(\d+) (\d+) (\S+)(.*)$")
_VERSION = re.compile(r"Linux version (\S+)")
PAGE_KB = 4
_MEMCG_FILES = {"memory.current": "usage", "memory.peak": "peak_usage", "memory.max": "max",
                "memory.high": "high", "memory.swap.current": "swap_usage", "memory.swap.max": "swap_max"}


def kernel_version(console: str) -> str | None:
    m = _VERSION.search(console)
    return m[1] if m else None


def profile_for_kernel(version: str | None) -> str:
    """The model's profile for the guest kernel: 5.18-6.7 print the 5.x task table, and
    have every 6.12 behaviour the profiles distinguish (kernel/profiles.py, linux-6.1)."""
    from ..replay import _version_tuple, profile_for_version
    v = _version_tuple(version or "")
    if v is not None and (5, 18, 0) <= v < (6, 8, 0) and "linux-6.1" in PROFILES:
        return "linux-6.1"
    return (profile_for_version(version) if version else None) or "linux-6.12"


def sections(events: str) -> dict[str, list[str]]:
    """The ``=name`` sections of the event port (``=memcg /a`` is the key ``memcg /a``)."""
    out: dict[str, list[str]] = {}
    cur = out.setdefault("", [])
    for line in events.splitlines():
        if line.startswith("="):
            cur = out.setdefault(line[1:].strip(), [])
        else:
            cur.append(line)
    return out


def meminfo(lines: list[str]) -> dict[str, int]:
    """``/proc/meminfo`` lines -> {key: kB}."""
    out = {}
    for line in lines:
        m = re.match(r"^(?:Node \d+ )?([\w()]+):\s+(\d+)", line)
        if m:
            out[m[1]] = int(m[2])
    return out


def zone_present(lines: list[str]) -> dict[int, dict[str, int]]:
    """``/proc/zoneinfo``'s present and managed pages, summed by node."""
    nodes: dict[int, dict[str, int]] = {}
    node = 0
    for line in lines:
        m = re.match(r"^Node (\d+), zone", line)
        if m:
            node = int(m[1])
            nodes.setdefault(node, {"present": 0, "managed": 0})
            continue
        m = re.match(r"^\s+(present|managed)\s+(\d+)", line)
        if m:
            nodes[node][m[1]] += int(m[2])
    return nodes


def runner_events(events: str) -> list[tuple[int, int, str, dict[str, str]]]:
    out = []
    for line in events.splitlines():
        m = _EVENT.match(line.strip())
        if m:
            kv = dict(p.split("=", 1) for p in m[4].split() if "=" in p)
            out.append((int(m[1]), int(m[2]), m[3], kv))
    return out


def _points(console: str, profile: str, nodes_of: Any, zones: dict[int, dict[str, int]]) -> dict[int, dict]:
    """pid -> {points, constraint, memcg, totalpages} of each report's victim."""
    reports, _ = parse_log(console, "console")
    prof = PROFILES[profile]
    out: dict[int, dict] = {}
    for rep in reports:
        victim = rep.victim_selected
        if victim is None:
            continue
        total, _how = rep.totalpages()
        constraint = rep.constraint_name
        if constraint in ("CONSTRAINT_CPUSET", "CONSTRAINT_MEMORY_POLICY") and total is not None:
            allowed = nodes_of(rep.comm, constraint)
            if allowed:  # constrained_alloc: the allowed nodes' present pages + swap
                swap = (rep.swap_total_kb or 0) // PAGE_KB
                total = sum(zones.get(n, {}).get("present", 0) for n in allowed) + swap
        points = None
        if rep.rows and total is not None:
            ctx = build_context(rep, profile, total)
            view = next((v for v in ctx.candidates if v.pid == victim.pid), None)
            if view is not None:
                points = prof.badness(view, total, 0, 250)
        out[victim.pid] = {"points": points, "constraint": constraint, "memcg": rep.memcg,
                           "totalpages": total}
    return out


def summarize_vm(console: str, events: str, *, nodes_of: Any = None, profile: str | None = None,
                 ended: str = "poweroff") -> dict[str, Any]:
    """The ``run --json`` keys that apply, from the two streams of one VM run."""
    version = kernel_version(console)
    profile = profile or profile_for_kernel(version)
    secs = sections(events)
    evs = runner_events(events)
    t0 = next((ns for ns, _pid, what, _kv in evs if what == "start"), None)
    t_end = next((ns for ns, _pid, what, _kv in evs if what == "end"), None)
    tasks: dict[int, dict[str, Any]] = {}
    refusals = {"alloc": 0, "fork": 0}
    errors: list[str] = []
    end_reason = None
    last = t0 or 0
    for ns, pid, what, kv in evs:
        last = max(last, ns)
        if what == "task":
            tasks[pid] = {"pid": pid, "comm": kv.get("name", "?"), "outcome": "running"}
        elif what == "fork":
            child = int(kv["child"])
            comm = kv.get("comm", "-")
            parent = tasks.get(pid, {}).get("comm", "?")
            tasks.setdefault(child, {"pid": child, "comm": parent if comm == "-" else comm,
                                     "outcome": "running"})
        elif what in ("died", "exited"):
            p = int(kv["pid"])
            if p in tasks:
                killed = what == "died" and kv.get("signal") == "9"
                tasks[p]["outcome"] = "killed" if killed else "exited"
        elif what == "enomem":
            refusals[kv.get("op", "alloc")] = refusals.get(kv.get("op", "alloc"), 0) + 1
        elif what == "end":
            end_reason = kv.get("reason")
        elif what == "error":
            errors.append(f"{tasks.get(pid, {}).get('comm', f'pid {pid}')}: {kv.get('what', '?')} "
                          f"failed (errno {kv.get('errno', '?')})")
    zones = zone_present(secs.get("zoneinfo", []))
    points = _points(console, profile, nodes_of or (lambda comm, c: None), zones)
    kills, late = [], []
    oom_invocations = alloc_failures = 0
    panic = None
    for raw in console.splitlines():
        line = raw.strip()
        if "invoked oom-killer:" in line:
            oom_invocations += 1
        if "page allocation failure:" in line:
            alloc_failures += 1
        m = _KILLED.match(line)
        if m:
            pid = int(m["pid"])
            t = float(m[1]) - (t0 or 0) / 1e9
            info = points.get(pid, {})
            # after the runner's end the init's own dumps run: a kill then is not the workload's
            after = t_end is not None and t0 is not None and float(m[1]) * 1e9 > t_end
            (late if after else kills).append({"t": round(t, 6), "pid": pid, "comm": m["comm"], "points": info.get("points"),
                          "message": (m["msg"] or "").strip(), "constraint": info.get("constraint"),
                          "memcg": info.get("memcg")})
        p = _PANIC.search(strip_prefixes(line))
        if p and panic is None:
            panic = p[1].strip()
    if panic is not None:
        end_reason = "panic"
    elif end_reason is None:
        end_reason = "timeout" if ended == "timeout" else "guest ended early"
    memcgs = {}
    for key, lines in secs.items():
        if key.startswith("memcg ") or key.startswith("memcg-local "):
            local = key.startswith("memcg-local ")
            path = key.split(" ", 1)[1]
            mc = memcgs.setdefault(path, {"usage": None, "peak_usage": None, "max": None, "high": None,
                                          "swap_usage": None, "swap_max": None,
                                          "events": dict.fromkeys(MEMCG_EVENTS, 0),
                                          "events_local": dict.fromkeys(MEMCG_EVENTS, 0)})
            for ln in lines:
                parts = ln.split()
                if len(parts) == 2 and parts[0] in MEMCG_EVENTS:
                    mc["events_local" if local else "events"][parts[0]] = int(parts[1])
                elif len(parts) == 2 and parts[0] in _MEMCG_FILES:
                    # in pages, as `run --json` has them; "max" stays the word
                    v = parts[1]
                    mc[_MEMCG_FILES[parts[0]]] = v if v == "max" else int(v) // 4096
    end_meminfo = meminfo(secs.get("meminfo-end", []))
    return {
        "kernel": version,
        "profile": profile,
        "policy": "linux",     # the kernel's own OOM killer chose
        "daemon": None,
        "simulated_seconds": round((last - (t0 or last)) / 1e9, 6),
        "end_reason": end_reason,
        "oom_invocations": oom_invocations,
        "kills": kills,
        "kills_after_workload": late,
        "alloc_failures": alloc_failures,
        "panic": panic,
        "tasks": sorted(tasks.values(), key=lambda t: t["pid"]),
        # Committed_AS in pages after the workload (the guest keeps no peak)
        "committed_as": end_meminfo["Committed_AS"] // PAGE_KB if "Committed_AS" in end_meminfo else None,
        "overcommit_refusals": refusals["alloc"] + refusals["fork"],
        "refusals": refusals,
        "memcgs": memcgs,
        "runner_errors": errors,   # set-up steps the runner could not do (a bug or a refusal)
        "meminfo": meminfo(secs.get("meminfo", [])),
        "zones": {str(n): z for n, z in zones.items()},
    }

