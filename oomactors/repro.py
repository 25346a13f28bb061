"""Reproducer files, and runs that check exactly the invariants they name.

A reproducer (:func:`write_repro`, :func:`load_repro`; written by ``oomactors explore``)
is a JSON object::

    {"format": "oomactors-repro/1",
     "config": {...},            # Config.as_dict(): the whole normalized config
     "seed": 12,                 # the run's seed
     "schedule": [[812, 7, "may_oom.locked", 5], ...],  # Schedule.to_json()
     "invariant": "oom_lock_exclusion",
     "violation": "t=...: pid 9 acquired oom_lock held by pid 7",
     "events": ["[    0.512000] cpu3 pid 7 ...", ...],   # the events up to the violation
     "policy": null,             # --policy spec, or null for the config's own
     "fixes": {"oom_lock": false},  # kernel fixes switched by the caller (sim.run fixes=)
     "checks": ["oom_lock_exclusion"], "scheduler": "random"}  # how it was found

``checks`` and ``scheduler`` are informational; everything else is needed to replay
(:func:`replay_repro`, ``oomactors run --replay FILE``), strictly by decision index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from . import sim
from .config import Config
from .errors import InputError
from .invariants import INVARIANTS, InvariantViolation
from .schedule import ReplayScheduler, Schedule, Scheduler

FORMAT = "oomactors-repro/1"
EVENTS_KEPT = 40  # events written to a reproducer, ending with the violating one


# --- one checked run ----------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run gave: the violation (or None), its records and recorded schedule."""

    violation: InvariantViolation | None
    machine: Any
    schedule: Schedule
    decisions: int

    @property
    def records(self) -> list[tuple]:
        return self.machine.records

    @property
    def invariant(self) -> str | None:
        return None if self.violation is None else self.violation.invariant


def check_names(checks: Iterable[str]) -> list[str]:
    """The invariant names, validated (InputError listing the known ones)."""
    names = list(dict.fromkeys(checks))
    if not names:
        raise InputError(f"no invariant to check (known: {', '.join(sorted(INVARIANTS))})")
    for name in names:
        if name not in INVARIANTS:
            raise InputError(f"unknown invariant {name!r} (known: {', '.join(sorted(INVARIANTS))})")
    return names


def named_checker(name: str, caught: dict[str, Any]) -> Callable[[Any, tuple], None]:
    """A fresh checker for invariant ``name`` that ends the run at its first violation and
    leaves the machine in ``caught["m"]`` (its records and choices stop right there)."""
    check = INVARIANTS[name]()

    def checked(m: Any, rec: tuple) -> None:
        try:
            check(m, rec)
        except InvariantViolation as exc:
            if getattr(exc, "invariant", None) is None:
                exc.invariant = name
            if getattr(exc, "record", None) is None:
                exc.record = rec
            caught["m"] = m  # the machine, stopped at this event by Machine.emit_on
            raise

    return checked


def checked_run(cfg: Config, *, seed: int, checks: list[str], scheduler: Scheduler | None = None,
                policy: Any = None, fixes: dict[str, bool] | None = None,
                sinks: list[Callable[[tuple], None]] | None = None) -> Outcome:
    """One run with exactly the named checkers; a violation ends it and is returned."""
    return _run(cfg, seed=seed, checks=checks, scheduler=scheduler, policy=policy, fixes=fixes,
                sinks=sinks)[0]


def _run(cfg: Config, *, seed: int, checks: list[str], scheduler: Scheduler | None, policy: Any,
         fixes: dict[str, bool] | None, sinks: list[Callable[[tuple], None]] | None,
         backend: str = "trio") -> tuple[Outcome, Any]:
    """The run, and its RunResult (None when a violation ended it)."""
    caught: dict[str, Any] = {}
    try:
        res = sim.run(cfg, seed=seed, backend=backend, scheduler=scheduler,
                      checkers=[named_checker(n, caught) for n in checks], policy=policy_instance(cfg, policy),
                      fixes=fixes, sinks=sinks, env_checks=False)
    except BaseException as exc:  # noqa: BLE001 - the run's task group wraps what an actor raised
        v = sim._find(exc, InvariantViolation)
        if v is None or "m" not in caught:
            raise  # not a violation (sim.run already unwrapped errors of ours)
        m = caught["m"]
        return Outcome(v, m, Schedule(tuple(m.sched.choices)), m.sched.decisions), None  # type: ignore[arg-type]
    return Outcome(None, res.machine, res.schedule, res.decisions), res


def policy_instance(cfg: Config, policy: Any) -> Any:
    """A fresh policy for one run: a spec string (through the policy registry, with the
    config's [policy] parameters when the names match), an instance, or None (the
    config's own [policy], else linux)."""
    if policy is None or not isinstance(policy, str):
        return policy  # None: sim.build takes the config's [policy], else linux
    from policies.registry import policy_for
    return policy_for(cfg, policy)


def policy_spec(policy: Any) -> str | None:
    """What a reproducer records for a policy: its spec, or module:Class of an instance."""
    if policy is None or isinstance(policy, str):
        return policy
    cls = type(policy)
    return f"{cls.__module__}:{cls.__qualname__}"


def event_lines(records: list[tuple], hz: int, last: int = EVENTS_KEPT) -> list[str]:
    """The last events of a run as dmesg-style text lines."""
    from .report import EventTable
    from .trace.render import text_line
    table = EventTable()
    return [text_line(table.decode(rec, hz)) for rec in records[-last:]]


# --- reproducer files ----------------------------------------------------------------------


def reproduce_command(path: str) -> str:
    return f"oomactors run --replay {path}"


def make_repro(cfg: Config, *, seed: int, schedule: Schedule, invariant: str, message: str,
               events: list[str], policy: Any = None, fixes: dict[str, bool] | None = None,
               checks: list[str] | None = None, scheduler: str | None = None) -> dict[str, Any]:
    return {"format": FORMAT, "config": cfg.as_dict(), "seed": seed, "schedule": schedule.to_json(),
            "invariant": invariant, "violation": message, "events": list(events),
            "policy": policy_spec(policy), "fixes": dict(fixes or {}),
            "checks": list(checks or [invariant]), "scheduler": scheduler}


def write_repro(path: str | Path, repro: dict[str, Any]) -> None:
    try:
        Path(path).write_text(json.dumps(repro, indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot write reproducer: {e.strerror or e}") from e


@dataclass
class Repro:
    cfg: Config
    seed: int
    schedule: Schedule
    invariant: str
    violation: str
    events: list[str]
    policy: str | None
    fixes: dict[str, bool]
    checks: list[str]
    raw: dict[str, Any]


def load_repro(path: str | Path) -> Repro:
    """Read and validate a reproducer file (InputError naming the file and key)."""
    from pydantic import ValidationError

    from .config import _format_error
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"{path}: cannot read reproducer: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: cannot read reproducer: not UTF-8 text") from e
    except ValueError as e:
        raise InputError(f"{path}: not a reproducer: bad JSON: {e}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not a reproducer (format is not {FORMAT!r})")
    for key in ("config", "seed", "schedule", "invariant"):
        if key not in data:
            raise InputError(f"{path}: {key}: missing required key")
    if not isinstance(data["config"], dict):
        raise InputError(f"{path}: config: expected an object")
    try:
        cfg = Config.model_validate(data["config"])
    except ValidationError as e:
        raise InputError(_format_error(e, data["config"], f"{path}: config")) from e
    seed = data["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"{path}: seed: expected a non-negative integer")
    schedule = Schedule.from_json(data["schedule"], f"{path}: schedule")
    invariant = data["invariant"]
    if not isinstance(invariant, str):
        raise InputError(f"{path}: invariant: expected a string")
    policy = data.get("policy")
    if policy is not None and not isinstance(policy, str):
        raise InputError(f"{path}: policy: expected a string or null")
    fixes = data.get("fixes") or {}
    if not isinstance(fixes, dict) or not all(isinstance(k, str) and isinstance(v, bool)
                                              for k, v in fixes.items()):
        raise InputError(f"{path}: fixes: expected an object of true/false switches")
    events = data.get("events") or []
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise InputError(f"{path}: events: expected a list of strings")
    checks = data.get("checks") or [invariant]
    if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
        raise InputError(f"{path}: checks: expected a list of invariant names")
    return Repro(cfg, seed, schedule, invariant, str(data.get("violation", "")), events, policy,
                 fixes, checks, data)


def replay_repro(repro: Repro, *, sinks: list[Callable[[tuple], None]] | None = None,
                 check: bool = True, backend: str = "trio") -> tuple[Outcome, Any]:
    """Run a reproducer's config, seed and schedule (strict replay), checking its
    invariant.  Returns the outcome and the RunResult (None if the violation ended it)."""
    checks = check_names([repro.invariant]) if check else []
    return _run(repro.cfg, seed=repro.seed, checks=checks, scheduler=ReplayScheduler(repro.schedule, strict=True),
                policy=repro.policy, fixes=repro.fixes or None, sinks=sinks, backend=backend)
