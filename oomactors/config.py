"""The run configuration: one TOML file describing the machine, the kernel, the run and
the tasks, validated into frozen pydantic models.

Why pydantic and why so strict:

* Every mistake must be reported as *one line naming the key path*
  (``configs/x.toml: tasks[0].program[2].size: negative size``) -- the same style for
  a typo'd key, a wrong type or a failed cross-field check.  Pydantic gives us the
  ``loc`` of each failure; :func:`_format_error` turns it into that path.
* Integers, booleans and strings are *strict*: TOML already has real types, so
  ``hz = "250"`` is far more likely a mistake than an intent.
* Models are frozen and collections are tuples because the config is stored in the
  trace header and must describe the run exactly; nothing may edit it mid-run.

``"auto"`` machine sizes are resolved during validation (the validated
:class:`Machine` holds plain ints), so :meth:`Config.as_dict` -- what the trace header
stores -- records what was actually simulated.  ``kernel.min_free_kbytes = "auto"`` is
left as is: the kernel model computes it from managed pages, as
``init_per_zone_wmark_min()`` does.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from oomactors.errors import ConfigError
from oomactors.units import PAGE_SIZE, Duration, format_size, to_jiffies

# the schema's pieces, re-exported: `from oomactors.config import ...` is the public face
from .config_sections import (FIXES, Cpuset, CpusetUpdate, Fixes, Kernel, Machine, MemPolicy, Memcg, NodeList,
                              PolicyTable, Run, SizeOrMax, Task)
from .config_steps import (OPS, STEP_TYPES, AccessStep, AllocStep, BlockStep, ComputeStep, ExitStep, ForkStep,
                           FreeStep, RepeatStep, SetOomScoreAdjStep, SleepStep, Step, TouchFileStep, WriteStep)
from .config_types import (CAPABILITIES, DMA_ZONE_MAX, HZ_VALUES, MAX_MEMORY, PROFILES, SEED_MAX, TASK_COMM_LEN,
                           UID_MAX, Bool, CommName, DurationT, Float, Int, KbytesOrAuto, NonNegInt, OptRate,
                           PositiveDuration, PositiveRate, PositiveSize, Rate, Size, SizeOrAuto, Str, _at, _Model)

__all__ = ["CAPABILITIES", "DMA_ZONE_MAX", "FIXES", "HZ_VALUES", "MAX_CONFIG_BYTES", "MAX_MEMORY", "MAX_NESTING",
           "OPS", "PROFILES", "SEED_MAX", "STEP_TYPES", "TASK_COMM_LEN", "UID_MAX",
           "AccessStep", "AllocStep", "BlockStep", "ComputeStep", "Config", "Cpuset", "CpusetUpdate", "ExitStep",
           "Fixes", "ForkStep", "FreeStep", "Kernel", "Machine", "MemPolicy", "Memcg", "PolicyTable", "RepeatStep",
           "Run", "SetOomScoreAdjStep", "SleepStep", "Step", "Task", "TouchFileStep", "WriteStep",
           "Bool", "CommName", "DurationT", "Float", "Int", "KbytesOrAuto", "NodeList", "NonNegInt", "OptRate",
           "PositiveDuration", "PositiveRate", "PositiveSize", "Rate", "Size", "SizeOrAuto", "SizeOrMax", "Str",
           "ConfigError", "default_config_text", "load_config", "load_default", "parse_config", "read_capped_text"]


class Config(_Model):
    """A whole run.  Every section has defaults, so an empty file is a valid config."""

    machine: Machine = Field(default_factory=Machine)
    kernel: Kernel = Field(default_factory=Kernel)
    run: Run = Field(default_factory=Run)
    tasks: tuple[Task, ...] = ()
    memcgs: tuple[Memcg, ...] = ()
    cpusets: tuple[Cpuset, ...] = ()
    cpuset_updates: tuple[CpusetUpdate, ...] = ()
    policy: Optional[PolicyTable] = None

    @model_validator(mode="after")
    def _numa(self) -> Config:
        """Cpuset names are unique and known where used; node and CPU ids exist; a
        mempolicy keeps at least one node of its cpuset (else set_mempolicy: EINVAL)."""
        nodes, cpus = self.machine.nodes, self.machine.cpus

        def check_nodes(path: tuple, ids: tuple[int, ...]) -> None:
            for j, n in enumerate(ids):
                if n >= nodes:
                    raise _at(path + (j,), f"node {n} does not exist (machine.nodes = {nodes})")

        mems: dict[str, frozenset[int]] = {"/": frozenset(range(nodes))}
        for i, c in enumerate(self.cpusets):
            if c.name in mems:
                raise _at(("cpusets", i, "name"), f"duplicate cpuset {c.name!r}")
            check_nodes(("cpusets", i, "mems"), c.mems)
            for j, cpu in enumerate(c.cpus or ()):
                if cpu >= cpus:
                    raise _at(("cpusets", i, "cpus", j), f"CPU {cpu} does not exist (machine.cpus = {cpus})")
            mems[c.name] = frozenset(c.mems)
        for i, t in enumerate(self.tasks):
            if t.cpuset not in mems:
                raise _at(("tasks", i, "cpuset"), f"unknown cpuset {t.cpuset!r}")
            if t.mempolicy is not None:
                check_nodes(("tasks", i, "mempolicy", "nodes"), t.mempolicy.nodes)
                if t.mempolicy.nodes and not frozenset(t.mempolicy.nodes) & mems[t.cpuset]:
                    raise _at(("tasks", i, "mempolicy", "nodes"),
                              f"no node of the policy is in cpuset {t.cpuset!r} (set_mempolicy: EINVAL)")
        for i, u in enumerate(self.cpuset_updates):
            if u.cpuset == "/" or u.cpuset not in mems:
                raise _at(("cpuset_updates", i, "cpuset"),
                          "the root cpuset's mems cannot be written" if u.cpuset == "/"
                          else f"unknown cpuset {u.cpuset!r}")
            check_nodes(("cpuset_updates", i, "mems"), u.mems)
        return self

    @model_validator(mode="after")
    def _starts_in_the_run(self) -> Config:
        """A task group that starts at or after the end of the run would never run: refused,
        since it is almost always a unit slip ("30ms" for "30s")."""
        hz, end = self.kernel.hz, to_jiffies(self.run.duration, self.kernel.hz)
        for i, t in enumerate(self.tasks):
            if to_jiffies(t.start, hz) >= end:
                raise _at(("tasks", i, "start"), f"{t.start} is not before the end of the run "
                                                 f"(run.duration = {self.run.duration})")
        return self

    @model_validator(mode="after")
    def _memcg_tree(self) -> Config:
        """Parents are declared before their children; tasks name declared memcgs; the
        memory tasks hold from boot fits each memory.max."""
        known = {"/"}
        for i, c in enumerate(self.memcgs):
            if c.path in known:
                raise _at(("memcgs", i, "path"), f"duplicate memcg {c.path!r}")
            parent = c.path.rsplit("/", 1)[0] or "/"
            if parent not in known:
                raise _at(("memcgs", i, "path"), f"parent {parent!r} must be declared before it")
            known.add(c.path)
        for i, t in enumerate(self.tasks):
            if t.memcg not in known:
                raise _at(("tasks", i, "memcg"), f"unknown memcg {t.memcg!r}")
        for j, c in enumerate(self.memcgs):
            if c.max == "max":
                continue
            boot = sum(t.rss // PAGE_SIZE * t.count for t in self.tasks
                       if t.memcg == c.path or t.memcg.startswith(c.path + "/"))
            if boot > c.max // PAGE_SIZE:
                raise _at(("memcgs", j, "max"), f"smaller than the rss its tasks hold from boot "
                                                f"({format_size(boot * PAGE_SIZE)})")
        return self

    @model_validator(mode="after")
    def _policy_fits(self) -> Config:
        """The [policy]'s parameters agree with the rest of the config (the cgroups they
        name are declared ...): the policy's ``check_config`` hook, after the memcgs."""
        if self.policy is None:
            return self
        from policies.registry import policy_class, validate_params
        check = getattr(policy_class(self.policy.name), "check_config", None)
        if check is None:  # a plugin class that does not derive from policies.api
            return self
        for key, problem in check(validate_params(self.policy.name, self.policy.params), self):
            raise _at(("policy", *key), problem)
        return self

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: tuple[Task, ...]) -> tuple[Task, ...]:
        seen: dict[str, int] = {}
        for i, task in enumerate(tasks):
            if task.name in seen:
                raise _at((i, "name"), f"duplicate task name {task.name!r} "
                                       f"(also tasks[{seen[task.name]}])")
            seen[task.name] = i
        return tasks

    def as_dict(self) -> dict[str, Any]:
        """The normalized config as plain ints/strings/bools/lists/dicts (for the trace
        header).  Durations become ``{"ns": .., "jiffies": ..}``; ``Config.model_validate``
        of the result gives back an equal config."""
        d = self.model_dump(mode="json")
        # all switches on is the kernel as it is: left out, so traces of ordinary configs
        # keep the header they had before [kernel.fixes] existed
        if self.kernel.fixes == Fixes():
            del d["kernel"]["fixes"]
        # likewise the SIGTERM dispositions and PSI samples when left at their defaults
        if self.run.psi_samples == Duration(0):
            del d["run"]["psi_samples"]
        for t, td in zip(self.tasks, d["tasks"]):
            if t.on_sigterm == "exit" and t.sigterm_exit_delay == Duration(0):
                del td["on_sigterm"], td["sigterm_exit_delay"]
        return d


# --- loading and error reporting ------------------------------------------------------------




_RANGE = {"greater_than_equal": ("ge", "must be at least {}"),
          "greater_than": ("gt", "must be greater than {}"),
          "less_than_equal": ("le", "must be at most {}"),
          "less_than": ("lt", "must be less than {}")}
_FIXED = {
    **dict.fromkeys(("missing", "union_tag_not_found"), "missing required key"),
    "extra_forbidden": "unknown key",
    **dict.fromkeys(("int_type", "int_parsing", "int_from_float"), "expected an integer"),
    **dict.fromkeys(("float_type", "float_parsing"), "expected a number"),
    "finite_number": "expected a finite number (not nan or inf)",
    **dict.fromkeys(("bool_type", "bool_parsing"), "expected true or false"),
    "string_type": "expected a string",
    **dict.fromkeys(("tuple_type", "list_type"), "expected an array"),
    **dict.fromkeys(("dict_type", "model_type", "model_attributes_type"), "expected a table"),
}


def _problem(err: dict[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _FIXED:
        return _FIXED[kind]
    if kind in _RANGE:
        key, text = _RANGE[kind]
        return text.format(ctx[key])
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "at_path":
        return ctx["problem"]
    if kind == "literal_error":
        return f"expected {ctx['expected']}"
    if kind == "union_tag_invalid":
        return f"unknown op {ctx['tag']!r} (expected {ctx['expected_tags']})"
    return err["msg"]


def _key_path(loc: list, data: Any) -> str:
    """``('tasks', 0, 'program', 2, 'alloc', 'size')`` -> ``tasks[0].program[2].size``.

    Walks the input alongside ``loc`` so it can tell the discriminator tag pydantic
    inserts (``'alloc'``: not a key of the step, but its ``op``) from a real key.
    """
    out: list[str] = []
    cur, prev = data, None
    for comp in loc:
        if isinstance(comp, int):
            out.append(f"[{comp}]")
            cur = cur[comp] if isinstance(cur, list) and -len(cur) <= comp < len(cur) else None
        elif isinstance(cur, dict) and comp not in cur and cur.get("op") == comp:
            continue
        elif cur is None and isinstance(prev, int) and comp in OPS:
            continue
        else:
            out.append(f".{comp}" if out else str(comp))
            cur = cur.get(comp) if isinstance(cur, dict) else None
        prev = comp
    return "".join(out)


def _format_error(exc: ValidationError, data: Any, source: str) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = list(first["loc"])
    if first["type"] == "at_path":
        loc += list(first["ctx"]["subpath"])
    elif first["type"] in ("union_tag_not_found", "union_tag_invalid"):
        loc.append("op")
    path = _key_path(loc, data)
    problem = " ".join(_problem(first).splitlines())
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {path}: {problem}{more}" if path else f"{source}: {problem}{more}"


MAX_CONFIG_BYTES = 1024 * 1024
MAX_NESTING = 48
"""Arrays and inline tables nest at most this deep (a ``fork`` or ``repeat`` step inside
another takes two levels), far beyond any real program and well inside Python's stack."""


def _too_deep(text: str) -> str | None:
    """Where ``[``/``{`` nesting first passes MAX_NESTING (``line N col M``), or None.

    Counted on the text before parsing, outside strings and comments, so neither the TOML
    parser nor validation recurses deeper than that."""
    depth, line, col, i, n = 0, 1, 0, 0, len(text)
    while i < n:
        c = text[i]
        col += 1
        if c == "\n":
            line, col = line + 1, 0
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c in "\"'":
            q = text[i:i + 3] if text[i:i + 3] in ('"""', "'''") else c
            j = i + len(q)
            while j < n and not text.startswith(q, j):
                if c == '"' and text[j] == "\\":
                    j += 1
                elif text[j] == "\n":
                    if len(q) == 1:
                        break  # an unterminated string: the parser will say so
                    line, col = line + 1, 0
                j += 1
            col += j + len(q) - i - 1
            i = j + len(q)
            continue
        elif c in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return f"line {line} col {col}"
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return None


_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = "(at end of document)"


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate TOML *text*; *source* names it in error messages (usually the path)."""
    text = text.removeprefix("\ufeff")  # a UTF-8 byte order mark, as some editors write
    if (where := _too_deep(text)) is not None:
        raise ConfigError(f"{source}: {where}: nested more than {MAX_NESTING} levels deep")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = " ".join(str(e).splitlines())
        if (m := _TOML_POS.search(msg)) is not None:
            where, msg = f"line {m[1]} col {m[2]}: ", msg[: m.start()]
        elif msg.endswith(_TOML_END):  # point at the end of the last line instead
            lines = text.splitlines() or [""]
            where = f"line {len(lines)} col {len(lines[-1]) + 1}: "
            msg = msg[: -len(_TOML_END)].rstrip()
        else:
            where = ""
        raise ConfigError(f"{source}: {where}TOML syntax error: {msg}") from e
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, data, source)) from e


def read_capped_text(path: str | Path, cap: int, error: type[Exception], *, unreadable: str,
                     bad: str) -> str:
    """The UTF-8 text of the file at *path*, read with a bounded read (``/dev/zero`` has no
    size to stat and must not be read for ever).  Every failure is one ``error`` line
    naming the file: ``"PATH: UNREADABLE: why"`` when it cannot be opened or read,
    ``"PATH: BAD: why"`` when it is over ``cap`` bytes or not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise error(f"{path}: {unreadable}: {e.strerror or e}") from e
    if len(data) > cap:
        raise error(f"{path}: {bad}: larger than {cap // 1024 // 1024} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: {bad}: not UTF-8 text (byte {e.start})") from e


def load_config(path: str | Path) -> Config:
    """Read and validate the TOML config at *path* (at most :data:`MAX_CONFIG_BYTES`: a
    config is a page or two of text)."""
    text = read_capped_text(path, MAX_CONFIG_BYTES, ConfigError, unreadable="cannot read config",
                            bad="cannot read config")
    return parse_config(text, str(path))


def default_config_text() -> str:
    """The embedded quickstart config (``oomactors/data/default.toml``), comments and all."""
    return resources.files("oomactors").joinpath("data", "default.toml").read_text("utf-8")


def load_default() -> Config:
    return parse_config(default_config_text(), "default.toml")
