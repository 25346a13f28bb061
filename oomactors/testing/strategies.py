"""Hypothesis strategies for oomactors: whole configs, their parts, and schedules.

The building blocks draw plain dicts in the config's TOML shape (what a ``[[tasks]]`` or
``[[memcgs]]`` entry holds), so they compose freely and read like the configs users write;
:func:`configs` puts them together and validates the result through
:class:`oomactors.config.Config`, so every drawn config is a valid one (a strategy bug
that produced an invalid dict raises :class:`oomactors.errors.ConfigError`, it is never
silently filtered).

Everything is bounded so one run stays short (small machines, a few task groups, a few
seconds of simulated time), and everything shrinks towards the plain case: fewer tasks,
smaller sizes, ``oom_score_adj`` 0, ``GFP_HIGHUSER_MOVABLE``, no memcgs, no swap,
fewer and smaller schedule perturbations.

::

    from hypothesis import given, settings
    from oomactors.testing.strategies import SIM_SETTINGS, configs

    @settings(SIM_SETTINGS, max_examples=15, derandomize=True)
    @given(cfg=configs())
    def test_no_unkillable_task_dies(oom_sim, cfg):
        oom_sim(cfg, checks=("no_unkillable_killed",))
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from oomactors import config as _config
from oomactors.config import Config
from oomactors.errors import ConfigError
from oomactors.schedule import Schedule, sparse_schedules

SIM_SETTINGS = settings(
    deadline=None,  # a run takes milliseconds to a second: no per-example deadline
    suppress_health_check=[HealthCheck.too_slow],
    # no Phase.explain: it traces every line while shrinking, which makes a simulation
    # about 15 times slower (a failing property would take minutes to shrink)
    phases=tuple(p for p in Phase if p is not Phase.explain),
)
"""Settings for properties over simulations: ``@settings(SIM_SETTINGS, max_examples=15)``."""

OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000

# the values that matter most first (a sampled_from shrinks towards its first element)
_ADJ_LANDMARKS = (0, OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX, -999, 999, -500, 500, 1, -1)

# GFP masks a program's alloc step may name (anything oomactors.kernel.gfp parses is
# valid; these are the ones the OOM path treats differently).  The first is the shrink
# target: a user page fault.
GFP_MASKS: tuple[str, ...] = (
    "GFP_HIGHUSER_MOVABLE",
    "GFP_KERNEL",
    "GFP_USER",
    "GFP_KERNEL_ACCOUNT",
    "GFP_NOFS",                          # no __GFP_FS: out_of_memory kills nobody
    "GFP_NOIO",
    "GFP_KERNEL | __GFP_NORETRY",        # never reaches the OOM killer
    "GFP_KERNEL | __GFP_RETRY_MAYFAIL",  # fails instead of killing
    "GFP_HIGHUSER_MOVABLE | __GFP_NOWARN",
    "GFP_NOWAIT",                        # no direct reclaim: fails fast
    "GFP_ATOMIC",                        # may dip into the reserves
    "GFP_KERNEL | __GFP_NOFAIL",         # loops (and may kill) until it succeeds
)
# masks that retry forever while memory stays short: NOFS/NOIO requests loop in the slow
# path without killing (out_of_memory gives up on them), __GFP_NOFAIL loops by contract.
# A run with one of them stuck can pass 100x more events than one without.
LOOPING_GFP_MASKS = frozenset(g for g in GFP_MASKS if "NOFAIL" in g or g in ("GFP_NOFS", "GFP_NOIO"))

_NAMES = ("hog", "svc", "db", "web", "batch", "cron", "agent", "cache")
_MEMCG_NAMES = ("a", "b", "c", "d", "e", "f")


def _mib(n: int) -> str:
    return f"{n}MiB"


def _ms(n: int) -> str:
    return f"{n}ms"


# --- single values ------------------------------------------------------------------------


def oom_score_adjs() -> st.SearchStrategy[int]:
    """An ``oom_score_adj``: the landmarks (0, -1000 OOM_SCORE_ADJ_MIN, 1000, ±999, ...)
    often, anything in [-1000, 1000] otherwise.  Shrinks towards 0."""
    return st.one_of(st.sampled_from(_ADJ_LANDMARKS),
                     st.integers(OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX))


def gfp_masks(*, looping: bool = True, masks: Sequence[str] | None = None) -> st.SearchStrategy[str]:
    """A GFP mask as config text (``"GFP_KERNEL | __GFP_NORETRY"``), from :data:`GFP_MASKS`
    (or ``masks``); ``looping=False`` leaves out :data:`LOOPING_GFP_MASKS` (GFP_NOFS,
    GFP_NOIO, __GFP_NOFAIL), which retry forever while memory stays short.  Shrinks
    towards ``GFP_HIGHUSER_MOVABLE``."""
    menu = tuple(masks) if masks is not None else GFP_MASKS
    if not looping:
        menu = tuple(g for g in menu if g not in LOOPING_GFP_MASKS)
    return st.sampled_from(menu)


# --- programs -------------------------------------------------------------------------------


def _alloc(memory_mib: int, looping: bool) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {"op": st.just("alloc"),
         "size": st.integers(1, max(1, memory_mib)).map(_mib)},
        optional={
            "gfp": gfp_masks(looping=looping),
            "kind": st.sampled_from(("anon", "shmem", "kernel")),
            "order": st.sampled_from((0, 1, 2, 3, 4)),
            "chunk": st.sampled_from((32, 1, 8, 128)),
            "rate": st.integers(8, 1024).map(lambda r: f"{r}MiB/s"),
            "on_fail": st.sampled_from(("exit", "continue", "retry")),
        })


def steps(memory_mib: int = 128, *, fork: bool = True, nested: bool = True,
          looping: bool = False) -> st.SearchStrategy[dict]:
    """One program step (a dict as in a ``program = [...]`` array): ``alloc`` (any kind,
    GFP mask, order, chunk, rate, on_fail), ``free``, ``touch_file``, ``access`` (a working
    set swept 1-3 times), ``sleep``,
    ``compute``, ``block`` (optionally holding mmap_lock), ``set_oom_score_adj``,
    ``exit``, ``fork`` (with a child program of its own, unless ``fork=False``) and
    ``repeat`` (unless ``nested=False``).  Sizes are bounded by ``memory_mib``."""
    leaf = st.one_of(
        _alloc(memory_mib, looping),
        st.fixed_dictionaries({"op": st.just("sleep"), "time": st.integers(1, 500).map(_ms)}),
        st.fixed_dictionaries({"op": st.just("free"),
                               "size": st.one_of(st.just("all"),
                                                 st.integers(1, max(1, memory_mib // 2)).map(_mib))}),
        st.fixed_dictionaries({"op": st.just("compute"), "time": st.integers(1, 100).map(_ms)}),
        st.fixed_dictionaries({"op": st.just("touch_file"),
                               "size": st.integers(1, max(1, memory_mib // 4)).map(_mib)},
                              optional={"dirty": st.booleans(), "mapped": st.booleans()}),
        st.fixed_dictionaries({"op": st.just("access"),
                               "size": st.integers(1, max(1, memory_mib // 2)).map(_mib),
                               "repeat": st.integers(1, 3)},
                              optional={"kind": st.sampled_from(("anon", "file", "shmem")),
                                        "rate": st.integers(16, 1024).map(lambda r: f"{r}MiB/s"),
                                        "chunk": st.sampled_from((64, 1, 16, 512))}),
        st.fixed_dictionaries({"op": st.just("set_oom_score_adj"), "value": oom_score_adjs()}),
        st.fixed_dictionaries({"op": st.just("block"), "time": st.integers(1, 300).map(_ms)},
                              optional={"hold_mmap_lock": st.booleans()}),
        st.just({"op": "exit"}),
    )
    parts = [leaf]
    inner = steps(memory_mib, fork=False, nested=False, looping=looping) if (fork or nested) else leaf
    if fork:
        parts.append(st.fixed_dictionaries(
            {"op": st.just("fork"), "program": st.lists(inner, min_size=1, max_size=3)},
            optional={"clone_vm": st.booleans()}))
    if nested:
        parts.append(st.fixed_dictionaries(
            {"op": st.just("repeat"), "times": st.integers(1, 3),
             "steps": st.lists(inner, min_size=1, max_size=3)}))
    return st.one_of(*parts)


def programs(memory_mib: int = 128, *, max_steps: int = 5, fork: bool = True,
             looping: bool = False) -> st.SearchStrategy[list[dict]]:
    """A task's program: 1 to ``max_steps`` :func:`steps`."""
    return st.lists(steps(memory_mib, fork=fork, looping=looping), min_size=1, max_size=max_steps)


def _hog_program(memory_mib: int, looping: bool) -> st.SearchStrategy[list[dict]]:
    """Allocate past the machine's memory, in pieces of a third to nine tenths of it (one
    request larger than RAM + swap would only be refused by the overcommit heuristic):
    what makes an OOM likely."""
    piece = st.integers(max(1, memory_mib // 3), max(1, memory_mib * 9 // 10)).map(_mib)
    alloc = st.fixed_dictionaries(
        {"op": st.just("alloc"), "size": piece},
        optional={"gfp": gfp_masks(looping=looping),
                  "kind": st.sampled_from(("anon", "shmem", "kernel")),
                  "rate": st.integers(64, 2048).map(lambda r: f"{r}MiB/s"),
                  "on_fail": st.sampled_from(("exit", "continue", "retry"))})
    hog = st.fixed_dictionaries({"op": st.just("repeat"), "times": st.integers(3, 8),
                                 "steps": st.lists(alloc, min_size=1, max_size=2)})
    return st.tuples(hog, st.lists(steps(memory_mib, looping=looping), max_size=2)).map(
        lambda t: [t[0], *t[1]])


# --- task groups and memcgs -----------------------------------------------------------------


@st.composite
def task_groups(draw: Any, memory_mib: int = 128, *, memcgs: Sequence[str] = ("/",),
                min_groups: int = 1, max_groups: int = 4, max_count: int = 3,
                max_threads: int = 2, pressure: bool = True, fork: bool = True,
                looping: bool = False) -> list[dict]:
    """A list of ``[[tasks]]`` entries with distinct names: counts, threads, uids,
    :func:`oom_score_adjs` (-1000 and 1000 included), a little ``rss`` held from boot,
    start times, a :func:`programs`, and a memcg out of ``memcgs``.

    With ``pressure`` the first group's program starts with a ``repeat`` that allocates
    past ``memory_mib`` in pieces, so most drawn workloads run out of memory.  ``rss`` is
    at most ``memory_mib / 64`` per process, so any memcg whose ``max`` is at least
    ``memory_mib / 4`` holds it (as :func:`memcg_trees` draws them)."""
    n = draw(st.integers(min_groups, max_groups))
    out = []
    for i in range(n):
        base = draw(st.sampled_from(_NAMES), label="name")
        program = (_hog_program(memory_mib, looping) if pressure and i == 0
                   else programs(memory_mib, fork=fork, looping=looping))
        group: dict[str, Any] = {"name": f"{base}{i}", "program": draw(program, label="program")}
        extras = draw(st.fixed_dictionaries({}, optional={
            "count": st.integers(1, max_count),
            "threads": st.integers(1, max_threads),
            "uid": st.sampled_from((1000, 0, 33)),
            "oom_score_adj": oom_score_adjs(),
            "rss": st.integers(1, max(1, memory_mib // 64)).map(_mib),
            "start": st.integers(0, 500).map(_ms),
            "stagger": st.integers(0, 50).map(_ms),
            "nice": st.integers(-20, 19),
        }), label="fields")
        group.update(extras)
        if len(memcgs) > 1 or memcgs[0] != "/":
            group["memcg"] = draw(st.sampled_from(tuple(memcgs)), label="memcg")
        out.append(group)
    return out


@st.composite
def memcg_trees(draw: Any, memory_mib: int = 128, *, max_memcgs: int = 4, swap: bool = True,
                protection: bool = True) -> list[dict]:
    """A list of ``[[memcgs]]`` entries forming a tree under the root, parents first:
    ``max`` (``"max"`` or a size of at least ``memory_mib / 4``), ``high``,
    ``swap_max``, ``min``/``low`` protection and ``oom_group``.  May be empty."""
    n = draw(st.integers(0, max_memcgs))
    paths: list[str] = []
    out = []
    floor = max(16, memory_mib // 4)
    for i in range(n):
        parent = draw(st.sampled_from(["/"] + paths), label="parent")
        path = parent.rstrip("/") + "/" + (_MEMCG_NAMES[i] if i < len(_MEMCG_NAMES) else f"g{i}")
        paths.append(path)
        size = st.integers(floor, max(floor, memory_mib)).map(_mib)
        fields: dict[str, st.SearchStrategy[Any]] = {
            "max": st.one_of(st.just("max"), size),
            "high": st.one_of(st.just("max"), size),
            "oom_group": st.booleans(),
        }
        if swap:
            fields["swap_max"] = st.one_of(st.just("max"), st.integers(0, memory_mib // 2).map(_mib))
        if protection:
            fields["min"] = st.integers(0, memory_mib // 8).map(_mib)
            fields["low"] = st.integers(0, memory_mib // 4).map(_mib)
        entry = {"path": path, **draw(st.fixed_dictionaries({}, optional=fields), label="limits")}
        out.append(entry)
    return out


# --- machine and kernel ---------------------------------------------------------------------


def machines(*, memory_mib: tuple[int, int] = (64, 256), cpus: tuple[int, int] = (1, 8),
             nodes: tuple[int, int] = (1, 2), swap: bool = True,
             page_cache: bool = True) -> st.SearchStrategy[dict]:
    """A ``[machine]`` table: memory in ``memory_mib`` (MiB), CPUs, NUMA nodes, optional
    swap (up to half the memory) and page cache at boot (up to an eighth)."""
    @st.composite
    def machine(draw: Any) -> dict:
        mem = draw(st.integers(*memory_mib), label="memory_mib")
        out: dict[str, Any] = {"memory": _mib(mem), "cpus": draw(st.integers(*cpus), label="cpus")}
        n = draw(st.integers(*nodes), label="nodes")
        if n > 1:
            out["nodes"] = n
        if swap:
            s = draw(st.one_of(st.just(0), st.integers(1, max(1, mem // 2))), label="swap_mib")
            if s:
                out["swap"] = _mib(s)
        if page_cache:
            pc = draw(st.one_of(st.just(0), st.integers(1, max(1, mem // 8))), label="page_cache_mib")
            if pc:
                out["page_cache"] = _mib(pc)
        return out
    return machine()


def kernels(*, profiles: Sequence[str] = ("linux-5.10",), knobs: bool = True) -> st.SearchStrategy[dict]:
    """A ``[kernel]`` table: a profile out of ``profiles`` and, with ``knobs``, HZ,
    ``oom_kill_allocating_task``, ``overcommit_memory`` 0/1 and ``watermark_scale_factor``."""
    unknown = [p for p in profiles if p not in _config.PROFILES]
    if unknown or not profiles:
        raise ConfigError(f"kernels(profiles=...): unknown profile(s) {unknown} "
                          f"(known: {', '.join(_config.PROFILES)})")
    fields: dict[str, st.SearchStrategy[Any]] = {}
    if knobs:
        fields = {"hz": st.sampled_from((250, 100, 300)),
                  "oom_kill_allocating_task": st.sampled_from((0, 1)),
                  "overcommit_memory": st.sampled_from((0, 1)),
                  "watermark_scale_factor": st.sampled_from((10, 100, 1000))}
    return st.fixed_dictionaries({"profile": st.sampled_from(tuple(profiles))}, optional=fields)


# --- whole configs ----------------------------------------------------------------------------


@st.composite
def config_dicts(draw: Any, *, memory_mib: tuple[int, int] = (64, 256), cpus: tuple[int, int] = (1, 8),
                 nodes: tuple[int, int] = (1, 2), swap: bool = True, memcgs: bool = True,
                 max_memcgs: int = 3, max_groups: int = 4, profiles: Sequence[str] = ("linux-5.10",),
                 knobs: bool = True, duration_s: tuple[int, int] = (1, 2), pressure: bool = True,
                 looping: bool = False, seed: bool = True) -> dict:
    """The dict of a whole config, not yet validated (see :func:`configs`)."""
    machine = draw(machines(memory_mib=memory_mib, cpus=cpus, nodes=nodes, swap=swap), label="machine")
    mem = int(machine["memory"][:-3])
    tree = draw(memcg_trees(mem, max_memcgs=max_memcgs, swap=swap), label="memcgs") if memcgs else []
    groups = draw(task_groups(mem, memcgs=["/"] + [c["path"] for c in tree], max_groups=max_groups,
                              pressure=pressure, looping=looping), label="tasks")
    run: dict[str, Any] = {"duration": f"{draw(st.integers(*duration_s), label='duration_s')}s"}
    if seed:
        run["seed"] = draw(st.integers(0, 2**16), label="seed")
    out: dict[str, Any] = {"machine": machine,
                           "kernel": draw(kernels(profiles=profiles, knobs=knobs), label="kernel"),
                           "run": run, "tasks": groups}
    if tree:
        out["memcgs"] = tree
    return out


def validate(data: dict, source: str = "<strategy>") -> Config:
    """A config dict through :class:`oomactors.config.Config`'s validation, failing as the
    loader does (one line naming the key)."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_config._format_error(e, data, source)) from e


def configs(*, memory_mib: tuple[int, int] = (64, 256), cpus: tuple[int, int] = (1, 8),
            nodes: tuple[int, int] = (1, 2), swap: bool = True, memcgs: bool = True,
            max_memcgs: int = 3, max_groups: int = 4, profiles: Sequence[str] = ("linux-5.10",),
            knobs: bool = True, duration_s: tuple[int, int] = (1, 2), pressure: bool = True,
            looping: bool = False, seed: bool = True) -> st.SearchStrategy[Config]:
    """Validated :class:`~oomactors.config.Config` objects of short runs.

    * ``memory_mib``, ``cpus``, ``nodes``: inclusive ranges for the machine; ``swap``:
      allow swap; ``memcgs``/``max_memcgs``: draw a memcg tree (max/high/swap_max/min/low,
      memory.oom.group) and put task groups in it;
    * ``max_groups``: task groups (each 1-3 processes of 1-2 threads, every
      ``oom_score_adj`` including -1000 and 1000, programs that allocate with any of
      :data:`GFP_MASKS`, free, fork, sleep, compute, block, touch files, change their
      oom_score_adj, repeat); ``pressure``: the first group allocates past the memory;
      ``looping``: allow the GFP masks that retry forever while memory is short
      (:data:`LOOPING_GFP_MASKS`; off by default: such runs can be 100x longer);
    * ``profiles``: kernel eras to draw from; ``knobs``: vary HZ,
      oom_kill_allocating_task, overcommit_memory 0/1 and watermark_scale_factor;
    * ``duration_s``: simulated seconds, inclusive; ``seed``: draw ``run.seed`` (else 0).
    """
    return config_dicts(memory_mib=memory_mib, cpus=cpus, nodes=nodes, swap=swap, memcgs=memcgs,
                        max_memcgs=max_memcgs, max_groups=max_groups, profiles=profiles, knobs=knobs,
                        duration_s=duration_s, pressure=pressure, looping=looping, seed=seed).map(validate)


# --- schedules ----------------------------------------------------------------------------------


def schedules(max_index: Any, max_len: int = 8, *, menu: Iterable[int] | None = None,
              hz: int | None = None, seed: int | None = None) -> st.SearchStrategy[Schedule]:
    """A sparse, lenient :class:`~oomactors.schedule.Schedule`: up to ``max_len``
    perturbations at distinct decision indices in ``[0, max_index)``, each an action of
    ``menu`` (default :func:`oomactors.schedule.default_menu`: -1 yield, or a hold of 1,
    2, 5 or HZ/10 jiffies).  Entries name no pid and point (a replay applies them by
    index without checking), and the list shrinks towards fewer perturbations, earlier
    indices and the first action of the menu (a yield).

    ``max_index`` is the number of decision points to draw below, or -- simpler -- the
    config the schedules are for (a :class:`~oomactors.config.Config`, a config dict or a
    TOML path): its unperturbed run (at ``seed``, default its ``run.seed``) is simulated
    once, when the strategy is built, to count them, and its HZ sizes the menu."""
    if not isinstance(max_index, int) or isinstance(max_index, bool):
        cfg = _config_of(max_index)
        hz = cfg.kernel.hz if hz is None else hz
        max_index = _decisions(cfg, cfg.run.seed if seed is None else seed)
    if max_index < 1:
        return st.just(Schedule())
    return sparse_schedules(k=max_index, max_choices=max_len, menu=menu, hz=250 if hz is None else hz)


def _config_of(value: Any) -> Config:
    from .plugin import _load
    return _load(value)


_DECISIONS: dict[tuple[str, int], int] = {}


def _decisions(cfg: Config, seed: int) -> int:
    """Decision points of the unperturbed run of ``cfg`` at ``seed`` (cached)."""
    import json

    from .. import sim
    key = (json.dumps(cfg.as_dict(), sort_keys=True, default=str), seed)
    if key not in _DECISIONS:
        _DECISIONS[key] = sim.run(cfg, seed=seed, env_checks=False).decisions
    return _DECISIONS[key]


__all__ = ["SIM_SETTINGS", "GFP_MASKS", "LOOPING_GFP_MASKS", "oom_score_adjs", "gfp_masks", "steps",
           "programs", "task_groups", "memcg_trees", "machines", "kernels", "config_dicts", "configs",
           "validate", "schedules"]
