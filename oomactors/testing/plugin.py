"""The oomactors pytest plugin (entry point ``pytest11``: loaded by every pytest run once
oomactors is installed; ``-p no:oomactors`` turns it off).

Fixtures, both session-scoped (so Hypothesis' ``function_scoped_fixture`` health check
has nothing to object to inside ``@given`` tests):

* ``oom_sim(cfg_or_path, *, seed=None, schedule=None, scheduler=None, checks=None,
  policy=None, fixes=None, duration=None)`` runs one simulation with the named invariant
  checkers (default: every one in :data:`oomactors.invariants.INVARIANTS`) watching each
  event, and returns the :class:`~oomactors.sim.RunResult`.  When an invariant breaks it
  writes a reproducer file and raises :class:`SimFailure` (an ``AssertionError``) whose
  message names the invariant, says what broke, shows the schedule in compact form and
  ends with the one-line command that replays it (``oomactors run --replay FILE``).
  Inside a Hypothesis test the same text is attached with ``hypothesis.note()``, and the
  file is written only for the final (shrunk) example Hypothesis reports.
* ``oom_sim_async(...)``: the same, awaitable, for pytest-trio (or any trio) tests.  trio
  cannot nest ``trio.run``, so the simulation runs in a worker thread
  (``trio.to_thread.run_sync``) with a random generator of its own for trio's seeded
  scheduler: the trace is byte-identical to the synchronous fixture's.

Reproducers go to ``--oomactors-repro-dir DIR`` if given, else to ``oomactors-repro/`` in
pytest's cache directory (``.pytest_cache/d/oomactors-repro``, the same in every session);
outside pytest (:func:`run_checked` called directly) to ``.oomactors/`` in the current
directory.  The plugin's own frames are hidden from failure tracebacks: a failure shows
the property, the shrunk schedule and the replay command.

This module imports nothing heavy at import time (pytest loads it in every session) and
never needs Hypothesis.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from oomactors.config import Config
    from oomactors.invariants import InvariantViolation
    from oomactors.schedule import Schedule, Scheduler
    from oomactors.sim import RunResult

REPRO_DIR_OPTION = "--oomactors-repro-dir"
CONTEXT_EVENTS = 6  # event lines shown in a failure message (the reproducer keeps 40)

# One simulation at a time in this process: trio's deterministic scheduling is switched on
# by module globals, and a run must not share them with another run in flight.
_RUN_LOCK = threading.RLock()


class SimFailure(AssertionError):
    """An invariant broke during an ``oom_sim`` run (the message says how to replay it)."""

    # keyword arguments with defaults: an exception is unpickled as cls(*args), then its
    # __dict__ is restored (pytest-xdist and multiprocessing send failures that way)
    def __init__(self, text: str, *, invariant: str = "", message: str = "", seed: int = 0,
                 schedule: "Schedule | None" = None, repro_path: Path | None = None,
                 violation: "InvariantViolation | None" = None, records: list[tuple] | None = None,
                 config: "Config | None" = None) -> None:
        super().__init__(text)
        self.invariant = invariant
        self.message = message
        self.seed = seed
        self.schedule = schedule
        self.repro_path = repro_path
        self.violation = violation
        self.records = records
        self.config = config

    @property
    def run(self) -> Any:
        """The failed run up to the violating event, as an :class:`oomactors.Run`: its events
        by name with named fields (``run.iter_events(["sim:oom_kill"])``, ``run.frame``)."""
        from oomactors.api import Run
        cfg = self.config
        return Run.from_records(self.records or [], seed=self.seed, hz=cfg.kernel.hz if cfg else 250,
                                config=cfg.as_dict() if cfg else None)

    @property
    def reproduce(self) -> str | None:
        from oomactors.explore import reproduce_command
        return reproduce_command(str(self.repro_path)) if self.repro_path is not None else None


# --- running one checked simulation ----------------------------------------------------------


def _load(cfg_or_path: Any) -> "Config":
    from oomactors.config import Config, load_config
    if isinstance(cfg_or_path, Config):
        return cfg_or_path
    if isinstance(cfg_or_path, Mapping):
        from pydantic import ValidationError

        from oomactors.config import _format_error
        from oomactors.errors import ConfigError
        data = dict(cfg_or_path)
        try:
            return Config.model_validate(data)
        except ValidationError as e:
            raise ConfigError(_format_error(e, data, "oom_sim config")) from e
    if isinstance(cfg_or_path, (str, Path)):
        return load_config(cfg_or_path)
    raise TypeError(f"oom_sim: expected a Config, a config dict or a path, not {type(cfg_or_path).__name__}")


def _scheduler_for(schedule: Any, scheduler: Any) -> "tuple[Scheduler | None, Schedule | None]":
    from oomactors.errors import InputError
    from oomactors.schedule import ReplayScheduler, Schedule
    if schedule is not None and scheduler is not None:
        raise InputError("oom_sim: give a schedule or a scheduler, not both")
    if scheduler is not None:
        return scheduler, None
    if schedule is None:
        return None, None
    if not isinstance(schedule, Schedule):
        schedule = Schedule.from_json(schedule, "oom_sim schedule")
    # a drawn (lenient) schedule may name decisions the run never reaches: not an error
    return ReplayScheduler(schedule, strict=not schedule.lenient), schedule


def _jiffies(duration: Any, hz: int) -> int | None:
    """``duration`` as jiffies: a string as a config writes it (``"5s"``, ``"300ms"``), a
    :class:`~oomactors.units.Duration`, or an int already in jiffies."""
    if duration is None or (isinstance(duration, int) and not isinstance(duration, bool)):
        return duration
    from oomactors.errors import InputError
    from oomactors.units import parse_duration, to_jiffies
    try:
        return to_jiffies(parse_duration(duration), hz)
    except ValueError as e:
        raise InputError(f"oom_sim duration: {e}") from None


def run_checked(cfg_or_path: Any, *, seed: int | None = None, schedule: Any = None,
                scheduler: Any = None, checks: Iterable[str] | None = None, policy: Any = None,
                fixes: dict[str, bool] | None = None, duration: int | str | None = None,
                repro_dir: str | Path | bool | None = None) -> "RunResult":
    """Run one simulation with the named invariants (default: all of ``INVARIANTS``).

    ``cfg_or_path``: a :class:`~oomactors.config.Config`, a config dict or a TOML path;
    ``seed``: default the config's ``run.seed``; ``schedule``: a
    :class:`~oomactors.schedule.Schedule` (or its compact/JSON form) to replay, or
    ``scheduler`` any :class:`~oomactors.schedule.Scheduler`; ``policy``: a policy
    instance or spec; ``fixes``: ``[kernel.fixes]`` switches to override; ``duration``:
    instead of ``run.duration``, as a config writes it (``"5s"``) or in jiffies.  Raises :class:`SimFailure` when an invariant
    breaks, after writing a reproducer into ``repro_dir`` (``None``: ``.oomactors/`` in
    the current directory; ``False``: write none).
    """
    from oomactors import sim
    from oomactors.explore import check_names
    from oomactors.invariants import INVARIANTS, InvariantViolation
    from oomactors.repro import named_checker, policy_instance

    __tracebackhide__ = True  # a failure shows the property, the schedule and the replay line
    cfg = _load(cfg_or_path)
    duration = _jiffies(duration, cfg.kernel.hz)
    if checks is None:
        names = check_names(INVARIANTS)
    else:
        checks = list(checks)
        names = check_names(checks) if checks else []  # checks=(): a plain run
    sched, drawn = _scheduler_for(schedule, scheduler)
    run_seed = cfg.run.seed if seed is None else seed
    pol = policy_instance(cfg, policy)
    caught: dict[str, Any] = {}
    records: list[tuple] = []   # a test reads every event of its run: keep them all
    with _RUN_LOCK:
        try:
            result = sim.run(cfg, seed=run_seed, scheduler=sched, policy=pol, fixes=fixes, duration=duration,
                             checkers=[named_checker(n, caught) for n in names], env_checks=False,
                             sinks=[records.append])
            result.kept = records
            return result
        except BaseException as exc:  # noqa: BLE001 - the run's task group wraps what an actor raised
            caught["violation"] = sim._find(exc, InvariantViolation)
            if caught["violation"] is None or "m" not in caught:
                raise  # not a violation (sim.run already unwrapped errors of ours)
    caught["records"] = records
    raise _failure(cfg, run_seed, caught, policy=policy, fixes=fixes, checks=names,
                   scheduler_name=getattr(sched, "name", None), drawn=drawn,
                   repro_dir=Path(".oomactors") if repro_dir is None else repro_dir) from None


def _hypothesis_context() -> Any:
    """The running Hypothesis build context, or None (not under Hypothesis, or not installed)."""
    if "hypothesis" not in sys.modules:
        return None
    try:
        from hypothesis.control import current_build_context, currently_in_test_context
        return current_build_context() if currently_in_test_context() else None
    except Exception:  # noqa: BLE001 - an unexpected Hypothesis version: no notes, no harm
        return None


def _failure(cfg: "Config", seed: int, caught: dict[str, Any], *, policy: Any, fixes: Any,
             checks: list[str], scheduler_name: str | None, drawn: "Schedule | None",
             repro_dir: str | Path | bool | None) -> SimFailure:
    __tracebackhide__ = True
    from oomactors.explore import event_lines, make_repro, reproduce_command, write_repro
    from oomactors.schedule import Schedule

    exc = caught["violation"]
    m = caught["m"]   # stopped at the violating event: its records and choices end there
    records = caught["records"]
    schedule = Schedule(tuple(m.sched.choices))
    invariant = exc.invariant
    message = str(exc)
    lines = event_lines(records, m.hz, last=40)
    ctx = _hypothesis_context()
    path: Path | None = None
    if repro_dir and (ctx is None or getattr(ctx, "is_final", True)):
        repro = make_repro(cfg, seed=seed, schedule=schedule, invariant=invariant, message=message,
                           events=lines, policy=policy, fixes=fixes, checks=checks,
                           scheduler=scheduler_name or "none")
        key = json.dumps([repro["config"], seed, repro["schedule"], repro["policy"], repro["fixes"],
                          invariant], sort_keys=True)
        directory = Path(repro_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{invariant}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
        write_repro(path, repro)
    shown = schedule.dumps() or "(none: the unperturbed schedule)"
    text = [f"invariant {invariant} violated: {message}",
            f"  seed {seed}, {len(schedule)} scheduling choice(s): {shown}"]
    if drawn is not None and drawn.dumps() != schedule.dumps():
        text.append(f"  drawn schedule: {drawn.dumps() or '(empty)'}")
    text.append("  last events:")
    text += [f"    {line}" for line in lines[-CONTEXT_EVENTS:]]
    if path is not None:
        text.append(f"  reproduce: {reproduce_command(str(path))}")
    elif ctx is not None:
        text.append("  reproduce: (the reproducer is written for the example Hypothesis reports)")
    body = "\n".join(text)
    if ctx is not None:
        # the exception carries the whole text; the note keeps what identifies the run
        short = [f"oomactors: invariant {invariant} violated (seed {seed}, schedule: {shown})"]
        if path is not None:
            short.append(f"oomactors: reproduce with: {reproduce_command(str(path))}")
        try:
            from hypothesis import note
            note("\n".join(short))
        except Exception:  # noqa: BLE001
            pass
    return SimFailure(body, invariant=invariant, message=message, seed=seed, schedule=schedule,
                      repro_path=path, violation=exc, records=records, config=cfg)


# --- trio: a seeded random per thread ----------------------------------------------------------


class _PerThreadRandom(random.Random):
    """Stands in for ``trio._core._run._r``: the main thread keeps the original generator
    (what pytest-trio and Hypothesis registered and seed), every other thread gets its own.
    A simulation in a worker thread seeds and consumes only its own, so an outer trio loop
    scheduling tasks meanwhile cannot change the simulation's interleaving."""

    def __new__(cls, main: random.Random) -> "_PerThreadRandom":  # noqa: D102
        return super().__new__(cls)

    def __init__(self, main: random.Random) -> None:  # no super().__init__: it would seed
        self._main = main
        self._local = threading.local()

    def _mine(self) -> random.Random:
        if threading.current_thread() is threading.main_thread():
            return self._main
        r = getattr(self._local, "r", None)
        if r is None:
            r = self._local.r = random.Random()
        return r

    def seed(self, *a: Any, **kw: Any) -> None:
        self._mine().seed(*a, **kw)

    def random(self) -> float:
        return self._mine().random()

    def getrandbits(self, k: int) -> int:
        return self._mine().getrandbits(k)

    def shuffle(self, x: Any) -> None:  # type: ignore[override]
        self._mine().shuffle(x)

    def uniform(self, a: float, b: float) -> float:
        return self._mine().uniform(a, b)

    def getstate(self) -> Any:
        return self._mine().getstate()

    def setstate(self, state: Any) -> None:
        self._mine().setstate(state)


def _isolate_trio_random() -> None:
    from trio._core import _run
    if not isinstance(_run._r, _PerThreadRandom):
        _run._r = _PerThreadRandom(_run._r)  # type: ignore[misc]


def _in_async_context() -> bool:
    try:
        import sniffio
        sniffio.current_async_library()
    except Exception:  # noqa: BLE001 - AsyncLibraryNotFoundError, or no sniffio at all
        return False
    return True


def _in_thread(fn: Callable[[], Any]) -> Any:
    __tracebackhide__ = True
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            out["error"] = exc

    t = threading.Thread(target=target, name="oomactors-sim")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


async def run_checked_async(cfg_or_path: Any, **kw: Any) -> "RunResult":
    """:func:`run_checked` from inside a trio run: in a worker thread."""
    __tracebackhide__ = True
    import trio
    _isolate_trio_random()
    return await trio.to_thread.run_sync(functools.partial(run_checked, cfg_or_path, **kw))


# --- pytest ---------------------------------------------------------------------------------------


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("oomactors", "oomactors simulations")
    group.addoption(REPRO_DIR_OPTION, dest="oomactors_repro_dir", default=None, metavar="DIR",
                    help="where oom_sim writes reproducers of invariant violations "
                         "(default: .pytest_cache/d/oomactors-repro)")


def _repro_dir(request: Any, tmp_path_factory: Any) -> Path:
    """``--oomactors-repro-dir``, else ``oomactors-repro`` in pytest's cache directory
    (``.pytest_cache/d/oomactors-repro``: the same place every session, kept until
    ``--cache-clear``), else (the cache plugin off) under the base temporary directory."""
    given = request.config.getoption("oomactors_repro_dir", None)
    if given:
        return Path(given)
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("oomactors-repro"))
    return tmp_path_factory.getbasetemp() / "oomactors-repro"


class OomSim:
    """The ``oom_sim`` fixture's value: call it to run a checked simulation."""

    def __init__(self, repro_dir: Callable[[], Path]) -> None:
        self._repro_dir = repro_dir

    def __call__(self, cfg_or_path: Any, *, seed: int | None = None, schedule: Any = None,
                 scheduler: Any = None, checks: Iterable[str] | None = None, policy: Any = None,
                 fixes: dict[str, bool] | None = None, duration: int | str | None = None) -> "RunResult":
        __tracebackhide__ = True
        run = functools.partial(run_checked, cfg_or_path, seed=seed, schedule=schedule, scheduler=scheduler,
                                checks=checks, policy=policy, fixes=fixes, duration=duration,
                                repro_dir=self._repro_dir())
        if _in_async_context():
            # called from inside an event loop (a trio test that did not await
            # oom_sim_async): the run cannot nest there, so it runs in a thread while the
            # caller's loop waits, blocked, as for any synchronous call
            _isolate_trio_random()
            return _in_thread(run)
        return run()


class OomSimAsync(OomSim):
    """The ``oom_sim_async`` fixture's value: ``await oom_sim_async(cfg, ...)``."""

    async def __call__(self, cfg_or_path: Any, **kw: Any) -> "RunResult":  # type: ignore[override]
        __tracebackhide__ = True
        kw.setdefault("repro_dir", self._repro_dir())
        return await run_checked_async(cfg_or_path, **kw)


@pytest.fixture(scope="session")
def oom_sim(request: Any, tmp_path_factory: Any) -> OomSim:
    """Run a simulation with invariant checkers: ``oom_sim(cfg_or_path, *, seed, schedule,
    scheduler, checks, policy, fixes, duration) -> RunResult``; an invariant violation
    raises :class:`SimFailure` with a ``oomactors run --replay FILE`` line."""
    return OomSim(lambda: _repro_dir(request, tmp_path_factory))


@pytest.fixture(scope="session")
def oom_sim_async(request: Any, tmp_path_factory: Any) -> OomSimAsync:
    """``await oom_sim_async(cfg_or_path, ...)`` in a trio test: ``oom_sim`` in a worker thread."""
    return OomSimAsync(lambda: _repro_dir(request, tmp_path_factory))
