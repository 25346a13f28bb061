"""Replaying real kernel OOM reports: who the kernel killed, next to who each policy would.

``oomactors replay LOGFILE...`` reads kernel log text -- ``dmesg`` (with ``[ 1234.567890]``
or ``dmesg -T`` stamps), ``journalctl`` / syslog lines (``Mon DD HH:MM:SS host kernel: ...``),
a report pasted into a mail or an issue (``> `` quoting too) -- finds every OOM report in
it, rebuilds what ``out_of_memory()`` had in front of it, and asks kill policies the
kernel's question again.

A report is rebuilt from:

* the ``X invoked oom-killer: gfp_mask=..., order=N, oom_score_adj=M`` line (every
  variant since 2.6.36), which opens it; a task-table header, a memcg ``memory: usage``
  line or a kill line seen outside any report opens a partial one (a paste that starts
  in the middle, or a report cut short by the printk ratelimit);
* the kernel version from ``CPU: N PID: N Comm: X Not tainted|Tainted: ... VERSION #N``;
* ``NNN pages RAM``, ``NNN pages reserved`` and ``Total swap = NNNkB`` for a global OOM,
  or ``memory: usage NkB, limit NkB`` (with ``memory+swap:`` or ``swap:``) for a memcg one;
* the task table, whatever its layout: the header line names the columns (``nr_ptes``,
  ``nr_ptes nr_pmds``, ``pgtables_bytes``, ``rss_anon rss_file rss_shmem``, 2.6.36's
  ``cpu oom_adj``), so no layout is hard-coded;
* the constraint (``oom-kill:constraint=...``, or a memcg OOM's own lines);
* the kernel's victim: ``...: Kill process X (comm) score N or sacrifice child`` (what
  ``select_bad_process`` picked, up to 5.0) and ``[...: ]Killed process Y (comm) ...``
  (what died: a sacrificed child when Y is not X).

From the report an :class:`~policies.api.OomContext` is built -- one
:class:`~policies.api.TaskView` per table row, in table order, which is the kernel's scan
order -- and each policy is asked to choose.  ``linux`` chooses with the era of the kernel
that printed the report: the version it printed picks the profile
(:func:`profile_for_version`), else the table layout does (:func:`profile_for_layout`),
unless ``--profile`` names one.

What the log cannot say, and what is assumed instead (README, "What is simplified"):

* totalpages of a global OOM is ``totalram_pages() + total_swap_pages``; totalram counts
  managed pages, and ``pages RAM - pages reserved`` is exactly the managed pages of the
  zones show_mem printed (present - managed per zone), so T = RAM - reserved + swap.  A
  cpuset or mempolicy OOM's T (the allowed nodes' pages + swap) is not in the log: the
  global T stands in, with a note;
* a memcg OOM's T is its limit plus the swap it may use: ``min(swap.max, total swap)``
  (cgroup v2) or ``memsw.limit - limit`` capped by the total swap (v1).  A memcg report
  does not print the machine's swap size, so unless the same report printed
  ``Total swap`` the swap part is taken as 0 (note);
* pages are 4 KiB;
* uid 0 is taken to hold CAP_SYS_ADMIN (the 2.6.36-4.16 root bonus); the table has no
  capabilities column;
* the table has no parent/child links, so "sacrifice child" is not replayed: a policy is
  compared with the task ``select_bad_process`` picked (the ``Kill process`` line);
* no task is known to be an earlier OOM victim still exiting (a printed kill means the
  kernel did not abort), and threads are not listed, so ties resolve by table order.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Sequence

from policies import api

from .errors import InputError
from .kernel.profiles import DEFAULT_PROFILE, PROFILES
from .oomlog import PAGE_SIZE, LogWarning, Report, parse_log, strip_prefixes

__all__ = ["LogWarning", "Report", "build_context", "parse_log", "profile_for_version", "replay_files",
           "replay_report", "strip_prefixes"]

# --- kernel eras -----------------------------------------------------------------------
def _version_tuple(version: str) -> tuple[int, int, int] | None:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not m:
        return None
    return int(m[1]), int(m[2]), int(m[3] or 0)


def profile_for_version(version: str) -> str | None:
    """The profile whose badness the kernel ``version`` used (None: not a version)."""
    v = _version_tuple(version)
    if v is None:
        return None
    if v < (2, 5, 0):
        return "linux-2.4"
    if v < (3, 5, 0):
        # 2.6.36-3.4; older 2.6 kernels come here too: RHEL 6's 2.6.32 carries the rewrite
        return "linux-2.6.36"
    if v < (3, 14, 0):
        return "linux-3.10"
    if v < (4, 17, 0):
        return "linux-4.14"
    if v < (5, 9, 0):
        return "linux-4.19"
    if v < (5, 18, 0):
        return "linux-5.10"
    return "linux-6.12"


def profile_for_layout(rep: Report) -> tuple[str, str]:
    """The era a report without a kernel version most likely comes from, from how its
    task table and kill lines look (kernel-oom-killer.md §10.6 and §10.8)."""
    cols = set(rep.columns)
    wide_pid = rep.header is not None and rep.header.startswith("[  pid  ]")
    if "rss_anon" in cols:
        return "linux-6.12", "table layout: rss_anon/rss_file/rss_shmem columns (6.8+)"
    if "pgtables_bytes" in cols and (wide_pid or rep.tasks_state):
        if rep.selected is not None and rep.killed is not None:
            return "linux-4.19", "table layout: 7-wide pid and a 'sacrifice child' line (4.19-5.0)"
        return "linux-5.10", "table layout: 7-wide pid column (4.19+; 5.9+ assumed)"
    if "pgtables_bytes" in cols:
        return "linux-4.19", "table layout: pgtables_bytes with a 5-wide pid (4.15-4.18)"
    if "nr_pmds" in cols:
        return "linux-4.14", "table layout: nr_ptes and nr_pmds (4.1-4.14)"
    if "nr_ptes" in cols:
        return "linux-3.10", "table layout: nr_ptes without nr_pmds (3.x-4.0)"
    if "oom_adj" in cols or "cpu" in cols:
        return "linux-2.6.36", "table layout: cpu and oom_adj columns (2.6.36-3.x)"
    if rep.selected is not None:
        return "linux-4.19", "a 'sacrifice child' kill line and no task table (2.6.36-5.0; 4.19 assumed)"
    return DEFAULT_PROFILE, "default: no kernel version and no task table"


def choose_profile(rep: Report, override: str | None) -> tuple[str, str]:
    if override is not None:
        return override, "--profile"
    if rep.kernel_version is not None:
        name = profile_for_version(rep.kernel_version)
        if name is not None:
            return name, "kernel version"
    name, why = profile_for_layout(rep)
    return name, why


# --- replaying -------------------------------------------------------------------------
_PER_MILLE_ERAS = {"linux-3.10", "linux-4.14", "linux-4.19"}


def shown_points(policy: Any, profile: str, points: int, totalpages: int) -> tuple[int, str]:
    """A policy's points on the scale the era's console printed its ``score`` in: 2.6.36's
    badness is already per mille; 3.5-5.0 printed points*1000/totalpages; 2.4 and 5.1+
    printed none, so the raw badness in pages.  Non-kernel policies keep their own."""
    from policies.linux import Linux

    if not isinstance(policy, Linux):
        return points, "policy"
    era = policy.era or profile
    if era in _PER_MILLE_ERAS:
        return max(0, points) * 1000 // max(1, totalpages), "per-mille"
    if era == "linux-2.6.36":
        return points, "per-mille"
    return points, "pages"


def build_context(rep: Report, profile: str, totalpages: int) -> api.OomContext:
    views = tuple(r.view() for r in rep.rows)
    current = next((v for v in views if rep.pid is not None and v.pid == rep.pid), None)
    if current is None:
        flags = frozenset({api.KTHREAD}) if rep.comm and rep.comm.startswith("kworker") else frozenset()
        current = api.TaskView(pid=rep.pid or 0, tgid=rep.pid or 0, comm=rep.comm or "?",
                               oom_score_adj=rep.oom_score_adj or 0, flags=flags)
    gfp = rep.gfp_flags or (f"{rep.gfp_mask:#x}" if rep.gfp_mask is not None else "")
    return api.OomContext(constraint=rep.constraint_name, totalpages=totalpages, gfp_mask=rep.gfp_mask or 0,
                          gfp=gfp, order=rep.order if rep.order is not None else 0, current=current,
                          memcg=rep.memcg if rep.constraint_name == "CONSTRAINT_MEMCG" else None,
                          profile=profile, candidates=views)


def load_policies(names: Sequence[str]) -> list[tuple[str, Any]]:
    from policies.registry import load_policy

    out = []
    for name in names:
        policy = load_policy(name)
        if getattr(policy, "kind", None) != "kernel":
            raise api.PolicyError(f"policy {name!r} is a userspace daemon: replay asks kernel-side "
                                  "policies (see `oomactors policies`)")
        out.append((name, policy))
    return out


def _choose(name: str, policy: Any, ctx: api.OomContext, rep: Report, profile: str) -> dict[str, Any]:
    try:
        decision = policy.select(ctx)
    except Exception as exc:  # noqa: BLE001 - the user's policy, reported by name
        raise api.PolicyError(f"policy {name!r} raised {type(exc).__name__}: {exc} "
                              f"(report at {rep.file}:{rep.line})") from exc
    if isinstance(decision, api.Kill):
        view = ctx.by_pid(decision.pid) if isinstance(decision.pid, int) else None
        if view is None or not isinstance(decision.points, int):
            raise api.PolicyError(f"policy {name!r} answered {decision!r}, which names none of the "
                                  f"{len(ctx.candidates)} tasks of the report at {rep.file}:{rep.line}")
        points, scale = shown_points(policy, profile, decision.points, ctx.totalpages)
        selected = rep.victim_selected
        return {"pid": view.pid, "comm": view.comm, "points": points, "badness": decision.points,
                "scale": scale, "whole_cgroup": decision.whole_cgroup,
                "agrees": selected.pid == view.pid if selected is not None else None}
    if isinstance(decision, api.Abort):
        return {"pid": None, "comm": None, "points": None, "decision": f"abort: {decision.reason}"}
    if isinstance(decision, api.NothingKillable):
        return {"pid": None, "comm": None, "points": None, "decision": "nothing killable"}
    raise api.PolicyError(f"policy {name!r} returned {decision!r}: expected Kill, Abort or NothingKillable")


def replay_report(rep: Report, index: int, policies: Sequence[tuple[str, Any]],
                  profile_override: str | None = None) -> dict[str, Any]:
    """One report, rebuilt and asked again: the JSON-ready record ``replay --json`` prints."""
    profile, profile_source = choose_profile(rep, profile_override)
    totalpages, how = rep.totalpages()
    notes = list(rep.notes)
    if rep.partial:
        notes.append("partial report: no 'invoked oom-killer' line")
    notes.extend(rep.merged)
    if rep.interleaved:
        notes.append(f"passed over {len(rep.interleaved)} line(s) of other console output inside the task table "
                     f"(lines {_spans(rep.interleaved)})")
    notes.append(f"inferred: era {profile} from {profile_source}"
                 + (f"; totalpages {totalpages} from {how}" if totalpages is not None else ""))
    if rep.selected is not None and rep.killed is not None and rep.selected.pid != rep.killed.pid:
        notes.append(f"the kernel selected {rep.selected.comm} ({rep.selected.pid}) and sacrificed its child "
                     f"{rep.killed.comm} ({rep.killed.pid}); policies are compared with the selection")
    if rep.allocating_task:
        notes.append("vm.oom_kill_allocating_task: the kernel killed the allocating task without a scan")
    choices: dict[str, Any] = {}
    if not rep.rows or totalpages is None:
        why = "no task table" if not rep.rows else "totalpages unknown"
        notes.append("no task table (oom_dump_tasks off, the report rate-limited, or trimmed): no policy "
                     "can choose" if not rep.rows else f"totalpages unknown: {how}")
        for name, _policy in policies:
            choices[name] = {"pid": None, "comm": None, "points": None, "decision": why}
    else:
        ctx = build_context(rep, profile, totalpages)
        for name, policy in policies:
            choices[name] = _choose(name, policy, ctx, rep, profile)
    selected = rep.victim_selected
    victim = None
    if selected is not None:
        died = rep.killed or selected
        victim = {"pid": died.pid, "comm": died.comm,
                  "score": rep.selected.score if rep.selected is not None else None,
                  "selected": {"pid": selected.pid, "comm": selected.comm},
                  "sacrificed_child": died.pid != selected.pid,
                  "message": next((k.message for k in (rep.killed, rep.selected) if k and k.message), None)}
        if rep.group_kills:
            victim["group"] = [{"pid": k.pid, "comm": k.comm} for k in rep.group_kills]
    return {
        "index": index,
        "file": rep.file,
        "line": rep.line,
        "end_line": rep.end_line,
        "kernel_version": rep.kernel_version,
        "profile": profile,
        "profile_source": profile_source,
        "constraint": rep.constraint_name,
        "memcg": rep.memcg,
        "totalpages": totalpages,
        "totalpages_source": how,
        "invoking_task": {"pid": rep.pid, "comm": rep.comm, "oom_score_adj": rep.oom_score_adj,
                          "gfp_mask": f"{rep.gfp_mask:#x}" if rep.gfp_mask is not None else None,
                          "gfp_flags": rep.gfp_flags, "order": rep.order},
        "table_layout": rep.layout,
        "tasks": len(rep.rows),
        "kernel_victim": victim,
        "choices": choices,
        "skipped_lines": list(rep.skipped_lines),
        "notes": notes,
    }


def _spans(lines: Sequence[int]) -> str:
    """``3-5, 9`` for the lines 3, 4, 5 and 9."""
    out: list[str] = []
    first = prev = None
    for n in [*sorted(lines), None]:
        if first is not None and (n is None or n != prev + 1):
            out.append(str(first) if first == prev else f"{first}-{prev}")
            first = None
        if first is None:
            first = n
        prev = n
    return ", ".join(out)


def read_log(path: str) -> str:
    """The text of a log: ``-`` is standard input; gzip and xz files (told by their magic
    bytes, whatever their name) are decompressed."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a log file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None
    return _decompress(data, path).decode("utf-8", errors="replace")


def _decompress(data: bytes, path: str) -> bytes:
    import gzip
    import lzma
    import zlib
    try:
        if data[:2] == b"\x1f\x8b":
            return gzip.decompress(data)
        if data[:6] == b"\xfd7zXZ\x00":
            return lzma.decompress(data, format=lzma.FORMAT_XZ)
    except EOFError:
        raise InputError(f"{path}: compressed log is truncated") from None
    except (OSError, lzma.LZMAError, zlib.error) as err:
        raise InputError(f"{path}: cannot decompress: {err}") from None
    return data


def replay_files(paths: Sequence[str], policy_names: Sequence[str] = ("linux",),
                 profile: str | None = None) -> tuple[list[dict[str, Any]], list[LogWarning]]:
    """Every report of every file, replayed with each policy; and the skipped lines.

    Raises InputError for an unreadable file, a file without an OOM report, an unknown
    profile or policy."""
    if profile is not None and profile not in PROFILES:
        raise InputError(f"--profile: unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    policies = load_policies(list(policy_names) or ["linux"])
    parsed = []
    warnings: list[LogWarning] = []
    for path in paths:
        reports, warns = parse_log(read_log(path), path)
        if not reports:
            raise InputError(f"{path}: no OOM report found (no 'invoked oom-killer' line, task table or "
                             "'Killed process' line)")
        parsed.extend(reports)
        warnings.extend(warns)
    results = [replay_report(rep, i, policies, profile) for i, rep in enumerate(parsed, start=1)]
    return results, warnings
