"""Reproducer files, and runs that check exactly the invariants they name.

A reproducer (:func:`write_repro`, :func:`load_repro`; written by ``oomactors explore``)
is a JSON object::

    {"format": "oomactors-repro/2",
     "config": {...},            # Config.as_dict(): the whole normalized config
     "seed": 12,                 # the run's seed
     "schedule": [[812, 7, "may_oom.locked", 5], ...],  # Schedule.to_json()
     "invariant": "oom_lock_exclusion",
     "violation": "t=...: pid 9 acquired oom_lock held by pid 7",
     "events": ["[    0.512000] cpu3 pid 7 ...", ...],   # the events up to the violation
     "policy": null,             # --policy spec, or null for the config's own
     "fixes": {"oom_lock": false},  # kernel fixes switched by the caller (sim.run fixes=)
     "checks": ["oom_lock_exclusion"], "scheduler": "random",  # how it was found
     "backend": "trio",          # the anyio backend it was recorded on (provenance: both replay it)
     "version": "0.1.0",         # the oomactors that wrote it
     "digest": {"config": "…", "seed": "…", ...}}  # a SHA-256 prefix of each field in SEALED

``checks``, ``scheduler``, ``violation`` and ``events`` are informational; everything in
:data:`SEALED` decides the replay (:func:`replay_repro`, ``oomactors run --replay FILE``,
strictly by decision index), so each has its digest: a field edited by hand, or a file
written by another version of oomactors, is refused with the field's name rather than
replayed into a silent "did not reproduce".
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from . import sim
from .config import Config, read_capped_text
from .errors import InputError
from .invariants import INVARIANTS, InvariantViolation
from .schedule import ReplayScheduler, Schedule, Scheduler

FORMAT = "oomactors-repro/2"
# the fields that decide a replay, each sealed by its digest
SEALED = ("config", "seed", "schedule", "invariant", "policy", "fixes", "backend", "version", "model")
# every key a reproducer may hold (another is refused: a typo must not pass for a field)
KEYS = frozenset((*SEALED, "format", "violation", "events", "checks", "scheduler", "digest"))
EVENTS_KEPT = 40  # events written to a reproducer, ending with the violating one
# a reproducer is a config (at most MAX_CONFIG_BYTES of TOML), a short schedule and 40
# event lines: anything much larger is not one (and /dev/zero must not be read for ever)
MAX_REPRO_BYTES = 8 * 1024 * 1024


# --- one checked run ----------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run gave: the violation (or None), its records (all of them with
    ``keep_records``, else the last :data:`EVENTS_KEPT`) and recorded schedule, and what it
    reached (:meth:`oomactors.coverage.Coverage.as_dict`)."""

    violation: InvariantViolation | None
    machine: Any
    schedule: Schedule
    decisions: int
    coverage: dict[str, Any] | None = None
    records: "list[tuple]" = field(default_factory=list, repr=False)

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

    checked.reads_psi = False  # type: ignore[attr-defined] # no built-in invariant reads PSI
    checked.event_ids = getattr(check, "event_ids", None)  # type: ignore[attr-defined]
    return checked


def checked_run(cfg: Config, *, seed: int, checks: list[str], scheduler: Scheduler | None = None,
                policy: Any = None, fixes: dict[str, bool] | None = None,
                sinks: list[Callable[[tuple], None]] | None = None, keep_records: bool = False) -> Outcome:
    """One run with exactly the named checkers; a violation ends it and is returned."""
    return _run(cfg, seed=seed, checks=checks, scheduler=scheduler, policy=policy, fixes=fixes,
                sinks=sinks, keep_records=keep_records)[0]


def _run(cfg: Config, *, seed: int, checks: list[str], scheduler: Scheduler | None, policy: Any,
         fixes: dict[str, bool] | None, sinks: list[Callable[[tuple], None]] | None,
         backend: str = "trio", keep_records: bool = False) -> tuple[Outcome, Any]:
    """The run, and its RunResult (None when a violation ended it)."""
    from .coverage import Coverage

    caught: dict[str, Any] = {}
    cov = Coverage()
    # the events a reproducer needs are the last few: a bounded deque, unless all are asked for
    kept: Any = [] if keep_records else deque(maxlen=EVENTS_KEPT)
    try:
        res = sim.run(cfg, seed=seed, backend=backend, scheduler=scheduler,
                      checkers=[cov.checker(), *(named_checker(n, caught) for n in checks)],
                      policy=policy_instance(cfg, policy), fixes=fixes, sinks=[kept.append, *(sinks or ())],
                      env_checks=False)
    except BaseException as exc:  # noqa: BLE001 - the run's task group wraps what an actor raised
        v = sim._find(exc, InvariantViolation)
        if v is None or "m" not in caught:
            raise  # not a violation (sim.run already unwrapped errors of ours)
        m = caught["m"]
        cov.add_machine(m)
        return Outcome(v, m, Schedule(tuple(m.sched.choices)), m.sched.decisions, cov.as_dict(),
                       list(kept)), None
    cov.add_machine(res.machine)
    return Outcome(None, res.machine, res.schedule, res.decisions, cov.as_dict(), list(kept)), res


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


def event_lines(records: Iterable[tuple], hz: int, last: int = EVENTS_KEPT) -> list[str]:
    """The last events of a run as dmesg-style text lines."""
    from .report import EventTable
    from .trace.render import text_line
    table = EventTable()
    return [text_line(table.decode(rec, hz)) for rec in deque(records, maxlen=last)]


# --- reproducer files ----------------------------------------------------------------------


def reproduce_command(path: str) -> str:
    return f"oomactors run --replay {path}"


def project_version() -> str:
    """The installed oomactors' version (schedules are only replayable by the same model)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("oomactors")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


# The modules whose source decides what a run does, given its config, seed and schedule:
# the kernel model, the actors, the engine (stepper, scheduler, clock, machine, events),
# config normalization and defaults, the user-space and PSI models, the kill policies,
# the invariants a replay checks, and the schedule replay itself.  Tools (cli, explore,
# reports, traces' encoders) are left out: they change no run.
MODEL_SOURCES = ("oomactors/kernel/", "oomactors/actors/", "policies/", "oomactors/stepper.py",
                 "oomactors/sched.py", "oomactors/clock.py", "oomactors/sim.py", "oomactors/machine.py", "oomactors/machine_boot.py",
                 "oomactors/events.py",
                 "oomactors/config.py", "oomactors/config_types.py", "oomactors/config_steps.py",
                 "oomactors/config_sections.py", "oomactors/userspace.py", "oomactors/userspace_files.py",
                 "oomactors/psi.py", "oomactors/psi_avgs.py", "oomactors/psi_trigger.py", "oomactors/units.py", "oomactors/invariants.py", "oomactors/oom_invariants.py",
                 "oomactors/schedule.py", "oomactors/choices.py")


@functools.cache
def model_digest() -> str:
    """A SHA-256 prefix of the source bytes of :data:`MODEL_SOURCES`, as installed (each
    file's path and bytes, in path order): a reproducer written by another model says so
    even when the version number is the same.  Computed once per process (~100 files)."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for entry in MODEL_SOURCES:
        where = root / entry
        files = sorted(where.rglob("*.py")) if entry.endswith("/") else [where]
        for f in files:
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
            try:
                h.update(f.read_bytes())
            except OSError:  # pragma: no cover - an installation without its sources
                h.update(b"?")
            h.update(b"\0")
    return h.hexdigest()[:16]


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def seal(repro: dict[str, Any]) -> dict[str, Any]:
    """``repro`` with the digest of each field that decides its replay (what regenerating
    a reproducer means; explore does it for every file it writes)."""
    return {**repro, "digest": {key: _digest(repro.get(key)) for key in SEALED}}


def make_repro(cfg: Config, *, seed: int, schedule: Schedule, invariant: str, message: str,
               events: list[str], policy: Any = None, fixes: dict[str, bool] | None = None,
               checks: list[str] | None = None, scheduler: str | None = None,
               backend: str = "trio") -> dict[str, Any]:
    return seal({"format": FORMAT, "config": cfg.as_dict(), "seed": seed, "schedule": schedule.to_json(),
                 "invariant": invariant, "violation": message, "events": list(events),
                 "policy": policy_spec(policy), "fixes": dict(fixes or {}),
                 "checks": list(checks or [invariant]), "scheduler": scheduler, "backend": backend,
                 "version": project_version(), "model": model_digest()})


def write_repro(path: str | Path, repro: dict[str, Any]) -> None:
    try:
        Path(path).write_text(json.dumps(repro, indent=1) + "\n", encoding="utf-8")
    except BrokenPipeError:  # `--out /dev/stdout | head`: the reader has gone, not bad input
        raise
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
    backend: str = "trio"
    model: str = ""               # the model digest it was recorded with (model_digest())

    @property
    def other_model(self) -> bool:
        """Recorded with a model whose source differs from this one's."""
        return self.model != model_digest()

    def other_model_text(self) -> str:
        return f"recorded with a different model (digest {self.model}, this is {model_digest()})"


def load_repro(path: str | Path) -> Repro:
    """Read and validate a reproducer file (InputError naming the file and key)."""
    text = read_capped_text(path, MAX_REPRO_BYTES, InputError, unreadable="cannot read reproducer",
                            bad="not a reproducer")
    try:
        data = json.loads(text)
    except RecursionError as e:
        raise InputError(f"{path}: not a reproducer: JSON nested too deeply") from e
    except ValueError as e:
        raise InputError(f"{path}: not a reproducer: bad JSON: {e}") from e
    try:
        return _validated(path, data)
    except RecursionError as e:  # nesting inside a field, below json's own limit
        raise InputError(f"{path}: not a reproducer: nested too deeply") from e


def _validated(path: str | Path, data: Any) -> Repro:
    from pydantic import ValidationError

    from .config import _format_error
    if isinstance(data, dict) and data.get("format") == "oomactors-repro/1":
        raise InputError(f"{path}: format: written by an older oomactors (oomactors-repro/1, without a digest): "
                         "regenerate it with `oomactors explore`")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not a reproducer (format is not {FORMAT!r})")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise InputError(f"{path}: {unknown[0]}: unknown key (a reproducer has {', '.join(sorted(KEYS))})")
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
    for n, c in enumerate(schedule.choices):  # explore records every entry in full
        if c.pid is None or c.point is None:
            raise InputError(f"{path}: schedule[{n}]: a lenient entry (no pid or point), which explore never "
                             "writes: a reproducer's entries are [index, pid, point, action]")
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
    backend = data.get("backend")
    if backend not in ("trio", "asyncio"):
        raise InputError(f"{path}: backend: expected \"trio\" or \"asyncio\"")
    model = data.get("model")
    if model is None:
        raise InputError(f"{path}: model: missing (written before reproducers recorded the model digest): "
                         "regenerate it with `oomactors explore`")
    if not isinstance(model, str):
        raise InputError(f"{path}: model: expected the model digest, a string")
    _check_seal(path, data)
    return Repro(cfg, seed, schedule, invariant, str(data.get("violation", "")), events, policy,
                 fixes, checks, data, backend, model)


def _check_seal(path: str | Path, data: dict[str, Any]) -> None:
    """Refuse a reproducer whose replay-deciding fields are not the ones explore wrote."""
    digest = data.get("digest")
    if not isinstance(digest, dict):
        raise InputError(f"{path}: digest: missing: this reproducer cannot show it was not edited; "
                         "regenerate it with `oomactors explore`")
    unknown = sorted(set(digest) - set(SEALED), key=str)
    if unknown:
        raise InputError(f"{path}: digest: {unknown[0]}: unknown key (the sealed fields are {', '.join(SEALED)})")
    for key in SEALED:
        if digest.get(key) != _digest(data.get(key)):
            raise InputError(f"{path}: {key}: edited since the reproducer was written (its digest does not "
                             "match); regenerate it with `oomactors explore` rather than edit it")
    here = project_version()
    if data["version"] != here:
        raise InputError(f"{path}: version: written by oomactors {data['version']}, this is {here}: the model "
                         "may schedule differently; regenerate it with this version's `oomactors explore`")


def replay_repro(repro: Repro, *, sinks: list[Callable[[tuple], None]] | None = None,
                 check: bool = True, backend: str | None = None,
                 keep_records: bool = False) -> tuple[Outcome, Any]:
    """Run a reproducer's config, seed and schedule (strict replay), checking its
    invariant, on ``backend`` (default: the one it was recorded on).  Returns the outcome
    and the RunResult (None if the violation ended it).  Either backend will do: the
    stepper decides who runs, not the event loop, so trio and asyncio give the same trace
    bytes; the recorded backend stays in the seal as provenance."""
    backend = backend or repro.backend
    checks = check_names([repro.invariant]) if check else []
    return _run(repro.cfg, seed=repro.seed, checks=checks, scheduler=ReplayScheduler(repro.schedule, strict=True),
                policy=repro.policy, fixes=repro.fixes or None, sinks=sinks, backend=backend,
                keep_records=keep_records)
