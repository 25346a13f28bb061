"""The reference pages of the documentation site, generated from the code.

Why generated: the config schema (:mod:`oomactors.config`), the event table
(:mod:`oomactors.events`), the command line (the click commands of :mod:`oomactors.cli`)
and the scheduling points (:data:`oomactors.sched.POINTS`) are each the one place their
facts live.  A hand-written copy drifts the day someone adds a key; these pages are built
from the code every time the site is (MkDocs loads this module as a hook: see :func:`on_files`),
and ``tests/test_docs.py`` checks that every key, step, command, event and point is on them.

Descriptions of config keys come from the field's own ``description`` when it has one, else
from :data:`KEY_HELP` below; a key with neither is still listed with its type and default.
"""

from __future__ import annotations

import typing
from typing import Any, Iterator

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

# --- config keys -----------------------------------------------------------------------

#: What a key means, by its path (``tasks[].program[]`` steps by ``step.<op>.<key>``).
KEY_HELP: dict[str, str] = {
    "machine": "The simulated hardware and what memory already holds at boot.",
    "machine.cpus": "CPUs (each an actor with a run queue and per-CPU page lists).",
    "machine.nodes": "NUMA nodes; memory is split evenly.",
    "machine.memory": "RAM.",
    "machine.dma": "ZONE_DMA on node 0, served to __GFP_DMA (auto: 16 MiB, at most node 0 / 16; 0: no ZONE_DMA). See [Limits](../limits.md).",
    "machine.dma32": "ZONE_DMA32 on node 0 (auto: a quarter of node 0, at most 1 GiB); the rest is ZONE_NORMAL.",
    "machine.reserved": "Present minus managed pages (auto: memory/64, at most 256 MiB).",
    "machine.swap": "Swap size.",
    "machine.swap_bandwidth": "The IO bandwidth swap-out waits for.",
    "machine.writeback_bandwidth": "Bandwidth of dirty page-cache writeback.",
    "machine.page_cache": "Clean page cache at boot.",
    "machine.dirty": "Dirty page cache at boot.",
    "machine.slab_reclaimable": "Dentry/inode caches, shrinkable with `__GFP_FS` (auto: memory/128).",
    "machine.slab_unreclaimable": "Other slab (auto: memory/256).",
    "machine.fragmentation": "Share of buddy merges blocked by unmovable pages; also shatters that share "
                             "of free memory at boot.",
    "kernel": "Kernel tunables; names and defaults follow the sysctls of the profile's kernel.",
    "kernel.profile": "Kernel era: `linux-2.4`, `linux-2.6.36`, `linux-3.10`, `linux-4.14`, `linux-4.19`, "
                      "`linux-5.10`, `linux-6.12` (see [Kernel eras](../eras.md)).",
    "kernel.hz": "Jiffies per second.",
    "kernel.min_free_kbytes": "As `init_per_zone_wmark_min` (4·√lowmem_kB, clamped to 128..262144).",
    "kernel.watermark_scale_factor": "Watermark gap in 1/10000 of the zone.",
    "kernel.lowmem_reserve_ratio": "DMA, DMA32, NORMAL.",
    "kernel.panic_on_oom": "0, 1 (system-wide OOMs), 2 (always).",
    "kernel.oom_kill_allocating_task": "Kill the allocating task instead of scanning.",
    "kernel.oom_dump_tasks": "Print the task table in the OOM report.",
    "kernel.time_slice": "Round-robin slice of a CPU's run queue.",
    "kernel.percpu_drift": "Per-CPU NR_FREE_PAGES threshold before folding.",
    "kernel.pcp_high": "Per-CPU page list high mark.",
    "kernel.pcp_batch": "Per-CPU page list batch.",
    "kernel.overcommit_memory": "0 GUESS (refuse one request > RAM + swap), 1 ALWAYS, 2 NEVER (strict CommitLimit).",
    "kernel.overcommit_ratio": "CommitLimit is this % of RAM plus swap, unless `overcommit_kbytes` is non-zero.",
    "kernel.overcommit_kbytes": "CommitLimit in kB plus swap, if non-zero.",
    "kernel.admin_reserve_kbytes": "Mode 2 reserve for CAP_SYS_ADMIN (auto: 3% of free memory at boot, at most 8 MiB).",
    "kernel.user_reserve_kbytes": "Mode 2 reserve for the user (auto: 3% of free memory at boot, at most 128 MiB).",
    "kernel.overcommit_heuristic": "`\"modern\"` (5.2+ `__vm_enough_memory`) or `\"2.4\"` (2.4's "
                                   "`vm_enough_memory`); the `linux-2.4` profile always uses `\"2.4\"`.",
    "kernel.pid_max": "kernel.pid_max (auto: 32768, or 1024 per CPU if more); fork fails with -EAGAIN when no pid below it is free.",
    "kernel.threads_max": "kernel.threads-max (auto: RAM / (8 x 16 KiB)); fork fails with -EAGAIN at it, a user without CAP_SYS_ADMIN/RESOURCE at half of it (RLIMIT_NPROC).",
    "kernel.fixes": "The race catalogue's kernel fixes; false brings the race back "
                    "(see [Race catalogue](../races.md)).",
    "kernel.fixes.oom_lock": "The oom_lock mutex serialising the OOM killer (4.2).",
    "kernel.fixes.high_wmark_last_attempt": "The last HIGH-watermark attempt under oom_lock.",
    "kernel.fixes.pending_victim_abort": "The scan aborts on a victim that has no MMF_OOM_SKIP yet.",
    "kernel.fixes.oom_reaper": "The oom_reaper kthread (4.6).",
    "kernel.fixes.mmf_oom_skip": "Victims whose mm has MMF_OOM_SKIP are skipped (4.8).",
    "kernel.fixes.cpuset_retry": "check_retry_cpuset before the OOM killer and at nopage.",
    "kernel.fixes.task_will_free_mem": "An exiting task gets reserves and the reaper instead of a kill.",
    "kernel.fixes.reaper_delay": "5.18+ OOM_REAPER_DELAY: the reaper waits 2 s (linux-6.12).",
    "kernel.fixes.memcg_oom_margin": "A memcg OOM waiter checks the memcg's margin before killing (5.9).",
    "kernel.fixes.mmf_unstable": "A fault in an mm the oom_reaper is unmapping fails with SIGBUS (4.13).",
    "kernel.fixes.memcg_dying_bypass": "A dying task waiting for a memcg OOM lets its charge through (5.1).",
    "run": "How long to simulate and with which random seed.",
    "run.duration": "Simulated time.",
    "run.seed": "Decides every choice of the run (below 2^64).",
    "run.stop_when_idle": "Stop once every user task has exited.",
    "run.meminfo_interval": "Period of the `sim:meminfo` event (0: none).",
    "run.psi_samples": "Period of the `sim:psi` samples (PSI of every group; see [PSI](../psi.md)); 0: none, "
                       "except one at the end of a run with a userspace daemon.",
    "tasks[]": "A group of `count` identical processes.",
    "tasks[].name": "comm of its processes.",
    "tasks[].count": "Processes in the group.",
    "tasks[].threads": "Threads per process.",
    "tasks[].uid": "User id (0 .. 2^32 - 2).",
    "tasks[].caps": "Capabilities: `CAP_SYS_ADMIN`, `CAP_SYS_RESOURCE`, `CAP_SYS_RAWIO`, `CAP_IPC_LOCK`, `CAP_KILL`.",
    "tasks[].oom_score_adj": "`/proc/PID/oom_score_adj` at start.",
    "tasks[].start": "When the first process starts.",
    "tasks[].stagger": "Delay between two processes' starts.",
    "tasks[].nice": "Nice value.",
    "tasks[].rss": "Anonymous memory held from boot.",
    "tasks[].program": "The steps each thread runs (see [Program steps](steps.md)).",
    "tasks[].memcg": "The memory cgroup its processes run in (`\"/\"`: the root).",
    "tasks[].cpuset": "The cpuset its processes run in (`\"/\"`: the root cpuset, every node).",
    "tasks[].mempolicy": "set_mempolicy: `{ mode = \"bind\" | \"preferred\" | \"interleave\", nodes = [..] }`.",
    "tasks[].mempolicy.mode": "`bind` and `interleave` need nodes; `preferred` without nodes is local allocation.",
    "tasks[].mempolicy.nodes": "Node ids; they must meet the cpuset's mems.",
    "tasks[].on_sigterm": "What SIGTERM does: `\"exit\"` (the default action, or a handler with "
                          "`sigterm_exit_delay`) or `\"ignore\"` (SIG_IGN).",
    "tasks[].sigterm_exit_delay": "How long a SIGTERM handler cleans up before it exits.",
    "memcgs[]": "A cgroup v2 memory controller.",
    "memcgs[].path": "`\"/a\"`, `\"/a/b\"`; a parent is declared before its children; the root is implicit.",
    "memcgs[].max": "memory.max.",
    "memcgs[].high": "memory.high: reclaim and a penalty sleep above it, never a kill.",
    "memcgs[].swap_max": "memory.swap.max.",
    "memcgs[].min": "memory.min: hard protection from reclaim.",
    "memcgs[].low": "memory.low: best-effort protection from reclaim.",
    "memcgs[].oom_group": "memory.oom.group: kill the whole group with the victim.",
    "cpusets[]": "A cpuset under the root.",
    "cpusets[].name": "Its name (no `/`).",
    "cpusets[].mems": "Node ids (not empty).",
    "cpusets[].cpus": "CPU ids (omit: every CPU).",
    "cpusets[].mem_hardwall": "false: GFP_KERNEL may leave the cpuset for the root's nodes; true: only its mems.",
    "cpuset_updates[]": "A write to a cpuset's mems while its tasks run.",
    "cpuset_updates[].at": "When.",
    "cpuset_updates[].cpuset": "Which cpuset.",
    "cpuset_updates[].mems": "Its new mems.",
    "policy": "The run's kill policy by name, with its parameters (see [Kill policies](../policies.md)).",
    "policy.name": "A built-in, a plugin's entry-point name, or `package.module:Name`.",
    # program steps
    "step.alloc.size": "Bytes to allocate.",
    "step.alloc.gfp": "GFP flags, e.g. `\"GFP_KERNEL | __GFP_NORETRY\"`.",
    "step.alloc.order": "Allocation order.",
    "step.alloc.rate": "Pace, e.g. `\"128MiB/s\"` (omit: as fast as possible).",
    "step.alloc.kind": "`anon`, `shmem` (mmap + fault, under mmap_lock) or `kernel` (can fail with -ENOMEM).",
    "step.alloc.chunk": "Pages per request.",
    "step.alloc.on_fail": "On -ENOMEM: `exit`, `retry` (after 10 ms) or `continue`.",
    "step.touch_file.size": "Bytes of page cache to read or write.",
    "step.touch_file.dirty": "Write (dirty pages) instead of read.",
    "step.touch_file.mapped": "Map the pages.",
    "step.touch_file.rate": "Pace (omit: as fast as possible).",
    "step.free.size": "Bytes of anonymous memory to munmap, or `\"all\"`.",
    "step.fork.comm": "The child's name (omit: the parent's).",
    "step.fork.clone_vm": "Share the parent's mm (a thread-like child).",
    "step.fork.program": "The child's steps.",
    "step.fork.on_fail": "When the fork is refused with -ENOMEM: `exit`, `retry` or `continue`.",
    "step.exit.code": "Exit code.",
    "step.sleep.time": "How long (a SIGKILL ends it).",
    "step.compute.time": "CPU time to burn.",
    "step.block.time": "How long.",
    "step.block.hold_mmap_lock": "Hold `mmap_lock` for write meanwhile.",
    "step.set_oom_score_adj.value": "The value written.",
    "step.repeat.times": "How often (omit: forever).",
    "step.repeat.steps": "The steps repeated.",
}

_STEP_WHAT = {
    "alloc": "mmap + fault in (anon/shmem: under `mmap_lock`, a failed fault goes through "
             "`pagefault_out_of_memory` and is retried), or a kernel allocation that can fail with -ENOMEM.",
    "touch_file": "Read or write the page cache.",
    "free": "munmap anonymous memory.",
    "fork": "Start a child (sharing the mm with `clone_vm`; otherwise the parent's accounted memory is "
            "charged again and the fork can fail with -ENOMEM).",
    "exit": "Exit.",
    "sleep": "Interruptible sleep (TASK_INTERRUPTIBLE; a SIGKILL ends it).",
    "compute": "Burn CPU (runnable the whole while).",
    "block": "Uninterruptible sleep (TASK_UNINTERRUPTIBLE), by default holding `mmap_lock` for write.",
    "set_oom_score_adj": "Write `/proc/PID/oom_score_adj`.",
    "repeat": "Loop over `steps`.",
}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (itself, in a tuple, or optional), if any."""
    for a in _flatten(annotation):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _flatten(annotation: Any) -> Iterator[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _flatten(typing.get_args(annotation)[0])
    elif origin in (typing.Union, tuple, list) or str(origin) == "types.UnionType":
        for a in typing.get_args(annotation):
            if a is not Ellipsis:
                yield from _flatten(a)
    else:
        yield annotation


def _validators(field: FieldInfo) -> str:
    names = []
    for m in field.metadata:
        func = getattr(m, "func", None)
        if func is not None:
            names.append(getattr(func, "__qualname__", ""))
    return " ".join(names)


def _type(field: FieldInfo) -> str:
    v = _validators(field)
    if "parse_size" in v or "_size_or" in v:
        base = "size"
    elif "parse_rate" in v or "_positive_rate" in v:
        base = "rate"
    elif "parse_duration" in v:
        base = "duration"
    elif "kbytes" in v or "_min_free" in v:
        base = "integer (kB)"
    else:
        base = ""
    literals = [a for a in _flatten(field.annotation) if typing.get_origin(a) is typing.Literal]
    words = [repr(x).replace("'", '"') for a in literals for x in typing.get_args(a)]
    kinds = {a for a in _flatten(field.annotation) if typing.get_origin(a) is not typing.Literal}
    if not base:
        if kinds & {bool}:
            base = "bool"
        elif kinds & {int}:
            base = "integer"
        elif kinds & {float}:
            base = "number"
        elif kinds & {str}:
            base = "string"
    outer = typing.get_origin(field.annotation)
    if typing.get_origin(field.annotation) is typing.Annotated:
        outer = typing.get_origin(typing.get_args(field.annotation)[0])
    is_list = outer in (tuple, list)
    if not base and not words and _model_of(field.annotation) is not None:
        base = "steps" if "Step" in str(field.annotation) else "tables"
    if words:
        choice = " or ".join(f"`{w}`" for w in words)
        base = f"{base} or {choice}" if base else choice
    return f"list of {base}" if is_list else (base or "value")


def _constraints(field: FieldInfo) -> str:
    out = []
    for m in field.metadata:
        for cls, attr, sym in ((at.Ge, "ge", "≥"), (at.Gt, "gt", ">"), (at.Le, "le", "≤"), (at.Lt, "lt", "<")):
            if isinstance(m, cls):
                out.append(f"{sym} {getattr(m, attr)}")
    return ", ".join(out)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return ""
    d = field.default
    if d is PydanticUndefined:
        return "required"
    if d is None:
        return "none"
    from oomactors.units import Duration, format_size
    if isinstance(d, Duration):
        return '`"0"`' if d.is_zero() else f'`"{d}"`'
    if isinstance(d, bool):
        return f"`{str(d).lower()}`"
    if isinstance(d, str):
        return f'`"{d}"`'
    if isinstance(d, tuple):
        return f"`{list(d)}`"
    if isinstance(d, int) and d and "size" in _type(field) and d % 1024 == 0:
        return f'`"{format_size(d)}"`'
    if isinstance(d, int) and d and "rate" in _type(field):
        return f'`"{format_size(d)}/s"`'
    return f"`{d}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_keys() -> list[tuple[str, type[BaseModel], str, FieldInfo]]:
    """Every key of a config as ``(path, model, name, field)``, sections and tables first."""
    from oomactors.config import Config, RepeatStep
    out: list[tuple[str, type[BaseModel], str, FieldInfo]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            path = f"{prefix}{name}"
            sub = _model_of(field.annotation)
            is_list = typing.get_origin(field.annotation) in (tuple, list)
            if name == "program" or (model is RepeatStep and name == "steps"):
                out.append((path, model, name, field))  # steps: their own page
                continue
            if sub is not None:
                key = path + ("[]" if is_list else "")
                out.append((key, model, name, field))
                walk(sub, key + ".")
            else:
                out.append((path, model, name, field))

    walk(Config, "")
    return out


def _help(path: str, field: FieldInfo) -> str:
    return field.description or KEY_HELP.get(path, "")


def config_page() -> str:
    from oomactors.config import Config
    lines = ["# Config keys", "",
             "Generated from the config schema (`oomactors/config.py` and its `config_*.py` parts) each time the site "
             "is built.",
             "Every key has a default unless marked *required*, so an empty file is a valid config.",
             "Sizes take binary units (`\"64KiB\"`, `\"2GiB\"`, `\"100 pages\"`), durations need a unit",
             "(`\"10ms\"`, `\"2s\"`, `\"3 jiffies\"`), rates end in `/s`. The prose is in",
             "[Configs](../configs.md); program steps are on [Program steps](steps.md).", ""]
    tables: dict[str, list[str]] = {}
    order: list[str] = []
    for path, _model, name, field in config_keys():
        section = path.rsplit(".", 1)[0] if "." in path else ""
        if _model_of(field.annotation) is not None and name != "program":
            continue  # a table heads its own section below
        if section not in tables:
            tables[section] = []
            order.append(section)
        tables[section].append(f"| `{path}` | {_cell(_type(field))} | {_cell(_default(field))} | "
                               f"{_cell(_constraints(field))} | {_cell(_help(path, field))} |")
    for section in order:
        title = f"`[{section}]`" if section and "[]" not in section else (f"`[[{section[:-2]}]]`"
                                                                         if section.endswith("[]")
                                                                         else f"`{section}`")
        if not section:
            title = "top level"
        lines += [f"## {title}", ""]
        if section in KEY_HELP:
            lines += [KEY_HELP[section], ""]
        if section == "policy":
            lines += ["Any other key of `[policy]` is a parameter of the named policy, validated by it.", ""]
        lines += ["| key | type | default | range | meaning |", "| --- | --- | --- | --- | --- |",
                  *tables[section], ""]
    del Config
    return "\n".join(lines)


def steps_page() -> str:
    from oomactors.config import STEP_TYPES
    lines = ["# Program steps", "",
             "Generated from the step models of `oomactors/config_steps.py`. A task group's `program` is a",
             "list of steps, and every step names its kind with the `op` key, which is required:", "",
             "```toml", "[[tasks]]", 'name = "leaker"', "program = [",
             '    { op = "alloc", size = "1GiB", rate = "128MiB/s" },',
             '    { op = "sleep", time = "10s" },', "]", "```", ""]
    for op, model in STEP_TYPES.items():
        lines += [f"## `op = \"{op}\"`", "", _STEP_WHAT.get(op, (model.__doc__ or "").strip()), ""]
        rows = [(n, f) for n, f in model.model_fields.items() if n != "op"]
        if not rows:
            lines += ["No other keys.", ""]
            continue
        lines += ["| key | type | default | range | meaning |", "| --- | --- | --- | --- | --- |"]
        for n, f in rows:
            lines.append(f"| `{n}` | {_cell(_type(f))} | {_cell(_default(f))} | {_cell(_constraints(f))} | "
                         f"{_cell(_help(f'step.{op}.{n}', f))} |")
        lines.append("")
    return "\n".join(lines)


# --- events, points, commands ------------------------------------------------------------


def events_page() -> str:
    from oomactors.events import EVENTS
    lines = ["# Event kinds", "",
             "Generated from the event table (`oomactors/events.py`). Every record is",
             "`(t, id, cpu, pid, fields...)`; `t` is in jiffies on disk and in seconds in",
             "`trace show --json`. *printed as* is the text `trace show` prints after the name.", ""]
    systems: dict[str, list[Any]] = {}
    for kind in EVENTS:
        systems.setdefault(kind.name.split(":", 1)[0], []).append(kind)
    for system, kinds in systems.items():
        lines += [f"## `{system}:`", "", "| event | fields | printed as |", "| --- | --- | --- |"]
        for k in kinds:
            fields = ", ".join(f"`{f}`" for f in k.fields) or "—"
            lines.append(f"| `{k.name}` | {fields} | `{_cell(k.fmt)}` |")
        lines.append("")
    return "\n".join(lines)


def points_page() -> str:
    from oomactors.sched import DECISION_EXCEPTIONS, POINTS
    lines = ["# Scheduling points", "",
             "Generated from `oomactors/sched.py` (`POINTS`, `DECISION_EXCEPTIONS`): every place the",
             "model can sleep or be preempted, the surface a scheduler controls (see [Scheduling",
             "points](../scheduling-points.md)).  *Decision point*: when a scheduler is asked there --",
             "at every pass, or, for a point that stands for CPU time, once per jiffy of it.",
             "", "| point | where | decision point |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {_cell(where)} | {_cell(DECISION_EXCEPTIONS.get(name, 'every pass'))} |"
              for name, where in POINTS.items()]
    return "\n".join(lines) + "\n"


def commands() -> list[tuple[str, Any]]:
    """Every command of the CLI as ``(full name, click command)``, groups included."""
    import click

    from oomactors.cli import main
    out: list[tuple[str, Any]] = []

    def walk(cmd: Any, name: str) -> None:
        out.append((name, cmd))
        if isinstance(cmd, click.Group):
            for sub in sorted(cmd.commands):
                walk(cmd.commands[sub], f"{name} {sub}")

    walk(main, "oomactors")
    return out


def cli_page() -> str:
    import click
    lines = ["# Command line", "",
             "Generated from the click commands (`oomactors/cli.py` and the modules it registers).",
             "`python -m oomactors ...` works too. Bad input is one line on stderr and exit status 2.", ""]
    for name, cmd in commands():
        ctx = click.Context(cmd, info_name=name)
        lines += [f"## `{name}`", ""]
        usage = cmd.collect_usage_pieces(ctx)
        lines += ["```", f"{name} {' '.join(usage)}".rstrip(), "```", ""]
        if cmd.help:
            lines += [_plain(cmd.help), ""]
        params = [p for p in cmd.get_params(ctx) if "--help" not in getattr(p, "opts", ())]
        if params:
            lines += ["| argument or option | meaning |", "| --- | --- |"]
            for p in params:
                record = p.get_help_record(ctx) if isinstance(p, click.Option) else None
                if record is None:
                    lines.append(f"| `{p.human_readable_name}` | argument |")
                else:
                    lines.append(f"| `{_cell(record[0])}` | {_cell(record[1])} |")
            lines.append("")
    return "\n".join(lines)


def _plain(text: str) -> str:
    return " ".join(text.replace("\b", "").split())


def pages() -> dict[str, str]:
    """The generated pages by their path under ``docs/``."""
    return {"reference/config.md": config_page(), "reference/steps.md": steps_page(),
            "reference/events.md": events_page(), "reference/points.md": points_page(),
            "reference/cli.md": cli_page()}


def on_files(files: Any, config: Any) -> Any:
    """The MkDocs hook (``hooks:`` in mkdocs.yml): add the generated pages to the build,
    in memory only, so they cannot drift from the code."""
    from mkdocs.structure.files import File

    for path, text in pages().items():
        files.append(File.generated(config, path, content=text))
    return files
