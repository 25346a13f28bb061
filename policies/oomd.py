"""Meta's oomd (github.com/facebookincubator/oomd) as a userspace OOM killer: ``oomd``.

oomd is a rule engine.  Its config is a list of **rulesets**; a ruleset has **detector
groups** and an **action chain**.  Every ``interval`` (``--interval``; 1 s in the
``oomd.service`` the project ships, 5 s when the binary runs without it) oomd sleeps,
refreshes its view of the cgroups and runs every ruleset:

* every detector of every group runs on every tick (so their timers keep counting), and a
  group *fires* when all of its detectors fire; a ruleset whose any group fired runs its
  action chain (``Ruleset::runOnce``, ``DetectorGroup::check``);
* actions run in order: one that did something answers STOP and ends the chain, one that
  found nothing to do answers CONTINUE and the next one runs;
* a kill pauses the ruleset's actions for ``post_action_delay`` (15 s), while its detectors
  keep running (``Ruleset::pause_actions``).

Detectors (``src/oomd/plugins``):

* ``pressure_above`` {cgroup, resource = "memory", threshold, duration}: of the cgroups the
  pattern names, the one with the highest ``3*avg10 + 2*avg60 + avg300`` of its *full*
  memory pressure is watched; it fires once its avg10 has been above ``threshold`` (a
  percentage) on every tick for ``duration`` whole seconds.
* ``memory_above`` {cgroup, threshold | threshold_anon, duration}: the largest
  ``memory.current`` (or ``anon`` of memory.stat) of the cgroups is above the threshold -- a
  size, or ``"N%"`` of MemTotal -- for ``duration``.
* ``swap_free`` {threshold_pct}: free swap is below ``threshold_pct`` % of the swap size
  (never, without swap).

Actions (each kills a whole cgroup: every process of it and of its descendants):

* ``kill_by_memory_size_or_growth`` {cgroup, size_threshold = 50, min_growth_ratio = 1.25,
  growing_size_percentile = 80, post_action_delay = 15 s, dry}: candidates are the cgroups
  the pattern names (``"workload/*"``: the children of /workload).  A candidate larger than
  ``size_threshold`` % of all candidates' ``memory.current`` (or as large) is killed first, the largest
  effective usage (memory.current less its memory.min/low protection) first; then one
  *growing*: ``memory.current`` over its decaying average (``avg = avg*3/4 + current/4``
  each tick, from 0) at least ``min_growth_ratio``, and among the largest
  ``100 - growing_size_percentile`` % by effective usage -- the fastest growing first; then
  the rest, by effective usage (``KillMemoryGrowth::get_ranking_fn``).
* ``kill_by_swap_usage`` {cgroup, threshold = 1 byte, ...}: the cgroup with the most swap
  (at least ``threshold``: a size or ``"N%"`` of SwapTotal).
* ``kill_by_pressure`` {cgroup, resource = "memory", ...}: the cgroup with the highest
  ``avg10/2 + avg60/2`` of its full memory pressure.

A cgroup that is empty or has no anonymous memory is passed over for the next best.  The
kill sends SIGKILL to each process of the subtree and repeats (after 1 s) while that still
finds processes to signal, at most ten rounds (``BaseKillPlugin::tryToKillCgroup``);
``kernelkill = true`` writes ``cgroup.kill`` instead.  With ``dry = true`` nothing is killed
but the action still counts as done (and still pauses the ruleset), as oomd does.

Each kill is a ``userspace:kill`` (or ``userspace:cgroup_kill``) event whose ``reason``
names the ruleset, the detector group and why the cgroup was picked::

    ruleset=protect detectorgroup=pressure kill_by_memory_size_or_growth: picked /work/big
    (size 301MB >= 50% of siblings' 420MB)

Not modelled: drop-in configs, the trusted.oomd_prefer/avoid xattrs (every cgroup is
"normal"), prekill hooks, ``recursive``, the io resource, and the other plugins.
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, PlainValidator, Strict,
                      model_validator)

from oomactors.units import KiB, Duration, parse_duration, parse_size

from .api import Daemon, config_cgroups

NSEC_PER_SEC = 1_000_000_000
SIGKILL = 9
AVERAGE_SIZE_DECAY = 4   # OomdContext's average_size_decay
KILL_TRIES = 10          # BaseKillPlugin::tryToKillCgroup


# --- parameter types ------------------------------------------------------------------------------
def _seconds(v: Any) -> Duration:
    """oomd counts durations in whole seconds; ours need a unit ("30s")."""
    d = parse_duration(v)
    if d.jiffies is not None or d.ns % NSEC_PER_SEC:
        raise ValueError("oomd counts whole seconds (e.g. '30s')")
    return d


Seconds = Annotated[Duration, PlainValidator(_seconds), PlainSerializer(lambda d: f"{d.ns // NSEC_PER_SEC}s")]


def _size_or_percent(v: Any) -> str:
    """``"N%"`` or a size with a unit (oomd's Util::parseSizeOrPercent; a bare number means
    megabytes there, so it is refused here to avoid the surprise)."""
    if isinstance(v, bool) or not isinstance(v, str):
        raise ValueError("expected a size such as '512MiB' or a percentage such as '80%'")
    s = v.strip()
    if s.endswith("%"):
        try:
            pct = float(s[:-1])
        except ValueError:
            raise ValueError(f"cannot parse percentage {v!r}") from None
        if not 0 <= pct <= 100:
            raise ValueError("a percentage must be within 0..100")
        return s
    if s.replace(".", "", 1).isdigit():
        raise ValueError("a size needs a unit ('512MiB'); oomd would read a bare number as megabytes")
    parse_size(s)
    return s


SizeOrPercent = Annotated[str, BeforeValidator(_size_or_percent)]


def resolve_size(spec: str, total_bytes: int) -> int:
    """A validated size-or-percent as bytes (a percentage of ``total_bytes``)."""
    if spec.endswith("%"):
        return int(total_bytes * float(spec[:-1]) / 100)
    return parse_size(spec)


def _cgroup_pattern(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("expected cgroup path patterns such as 'workload/*' or '/'")
    if " " in v:
        raise ValueError("no spaces between ',' separated cgroups (as oomd)")
    return v


CgroupPattern = Annotated[str, BeforeValidator(_cgroup_pattern)]
Percent = Annotated[float, Strict(False), Field(ge=0, le=100)]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PressureAboveArgs(_M):
    plugin: Literal["pressure_above"]
    cgroup: CgroupPattern
    resource: Literal["memory"] = "memory"
    threshold: Percent
    duration: Seconds


class MemoryAboveArgs(_M):
    plugin: Literal["memory_above"]
    cgroup: CgroupPattern
    threshold: Optional[SizeOrPercent] = None
    threshold_anon: Optional[SizeOrPercent] = None
    duration: Seconds = Duration(0)

    @model_validator(mode="after")
    def _one_threshold(self) -> "MemoryAboveArgs":
        if self.threshold is None and self.threshold_anon is None:
            raise ValueError("memory_above needs threshold or threshold_anon")
        return self


class SwapFreeArgs(_M):
    plugin: Literal["swap_free"]
    threshold_pct: Annotated[int, Strict(), Field(ge=0, le=100)]


DetectorArgs = Annotated[Union[PressureAboveArgs, MemoryAboveArgs, SwapFreeArgs],
                         Field(discriminator="plugin")]


class _KillArgs(_M):
    cgroup: CgroupPattern
    post_action_delay: Seconds = Duration(15 * NSEC_PER_SEC)
    dry: Annotated[bool, Strict()] = False
    kernelkill: Annotated[bool, Strict()] = False


class KillBySizeOrGrowthArgs(_KillArgs):
    plugin: Literal["kill_by_memory_size_or_growth"]
    size_threshold: Annotated[int, Strict(), Field(ge=0, le=100)] = 50
    min_growth_ratio: Annotated[float, Field(ge=0)] = 1.25
    growing_size_percentile: Annotated[int, Strict(), Field(ge=0, le=99)] = 80


class KillBySwapUsageArgs(_KillArgs):
    plugin: Literal["kill_by_swap_usage"]
    threshold: Optional[SizeOrPercent] = None  # unset: 1 byte, any swap at all


class KillByPressureArgs(_KillArgs):
    plugin: Literal["kill_by_pressure"]
    resource: Literal["memory"] = "memory"


ActionArgs = Annotated[Union[KillBySizeOrGrowthArgs, KillBySwapUsageArgs, KillByPressureArgs],
                       Field(discriminator="plugin")]


class DetectorGroupArgs(_M):
    name: Annotated[str, Strict()]
    detectors: Annotated[tuple[DetectorArgs, ...], Field(min_length=1)]


class RulesetArgs(_M):
    name: Annotated[str, Strict()]
    detector_groups: Annotated[tuple[DetectorGroupArgs, ...], Field(min_length=1)]
    actions: Annotated[tuple[ActionArgs, ...], Field(min_length=1)]


def _default_rulesets() -> tuple[RulesetArgs, ...]:
    """A small version of the config oomd's documentation shows: kill the largest (or
    fastest-growing) cgroup under the root when the whole machine stalls on memory, and
    the biggest swap user when swap runs out."""
    return (
        RulesetArgs.model_validate({
            "name": "memory pressure protection",
            "detector_groups": [{"name": "system is under a lot of pressure", "detectors": [
                {"plugin": "pressure_above", "cgroup": "/", "threshold": 60, "duration": "30s"}]}],
            "actions": [{"plugin": "kill_by_memory_size_or_growth", "cgroup": "/*"}]}),
        RulesetArgs.model_validate({
            "name": "low swap protection",
            "detector_groups": [{"name": "swap is running low", "detectors": [
                {"plugin": "swap_free", "threshold_pct": 15}]}],
            "actions": [{"plugin": "kill_by_swap_usage", "cgroup": "/*"}]}),
    )


class OomdParams(_M):
    """``[policy]`` of ``name = "oomd"``: ``interval`` and the ``rulesets`` (see the module
    docstring and configs/userspace-oomd.toml)."""

    interval: Seconds = Duration(NSEC_PER_SEC)
    rulesets: tuple[RulesetArgs, ...] = Field(default_factory=_default_rulesets)

    @model_validator(mode="after")
    def _interval(self) -> "OomdParams":
        if self.interval.ns == 0:
            raise ValueError("interval must be at least 1s")
        return self


# --- what oomd sees in one tick ----------------------------------------------------------------------
def split_patterns(spec: str) -> list[str]:
    """oomd's comma-separated cgroup patterns, as absolute paths ("/" is the root)."""
    out = []
    for part in spec.split(","):
        part = part.strip().strip("/")
        out.append("/" + part if part else "/")
    return out


def glob_cgroups(patterns: list[str], paths: list[str]) -> list[str]:
    """The existing cgroups the patterns name, each once, in the tree's order."""
    out = []
    for path in paths:
        parts = [p for p in path.split("/") if p]
        for pat in patterns:
            pparts = [p for p in pat.split("/") if p]
            if len(pparts) == len(parts) and all(fnmatchcase(a, b) for a, b in zip(parts, pparts)):
                out.append(path)
                break
    return out


class Tick:
    """OomdContext for one event-loop tick: each cgroup file is read at most once."""

    def __init__(self, host: Any, averages: dict[str, int]) -> None:
        self.host = host
        self.paths = host.cgroup_paths()
        self._cg: dict[str, Any] = {}
        self._pressure: dict[str, Any] = {}
        self._prot: dict[str, int] = {}
        self._meminfo = None
        self.prev_averages = averages
        self.averages: dict[str, int] = {}

    def meminfo(self):
        if self._meminfo is None:
            self._meminfo = self.host.meminfo()
        return self._meminfo

    def cgroup(self, path: str):
        if path not in self._cg:
            self._cg[path] = self.host.cgroup(path)
        return self._cg[path]

    def resolve(self, spec: str) -> list[str]:
        return glob_cgroups(split_patterns(spec), self.paths)

    def pressure(self, path: str):
        """memory.pressure of the cgroup (the root: /proc/pressure/memory)."""
        if path not in self._pressure:
            self._pressure[path] = self.host.pressure(path)
        return self._pressure[path]

    def full(self, path: str) -> tuple[float, float, float]:
        """oomd's mem_pressure(): the *full* line, in percent."""
        f = self.pressure(path).full
        return f.avg10 / 100, f.avg60 / 100, f.avg300 / 100

    def current(self, path: str) -> int:
        return self.cgroup(path).memory_current

    def anon(self, path: str) -> int:
        return self.cgroup(path).stat.anon

    def protection(self, path: str) -> int:
        """CgroupContext::getMemoryProtection: memory.min/low as the kernel distributes it
        (a child's share is cut when its siblings claim more than the parent has)."""
        if path in self._prot:
            return self._prot[path]
        cg = self.cgroup(path)
        if cg.is_root:
            prot = cg.memory_current
        else:
            raw = min(cg.memory_current, max(cg.memory_min, cg.memory_low))
            parent = self.cgroup(cg.parent)
            if parent.is_root:
                prot = raw
            else:
                total = sum(min(c.memory_current, max(c.memory_min, c.memory_low))
                            for c in map(self.cgroup, parent.children))
                prot = 0 if total == 0 else int(raw * min(1.0, self.protection(cg.parent) / total))
        self._prot[path] = prot
        return prot

    def effective(self, path: str) -> int:
        return self.current(path) - self.protection(path)

    def average(self, path: str) -> int:
        """CgroupContext::getAverageUsage: decays the last tick's average toward now."""
        if path not in self.averages:
            prev = self.prev_averages.get(path, 0)
            d = AVERAGE_SIZE_DECAY
            self.averages[path] = int(prev * ((d - 1) / d) + self.current(path) / d)
        return self.averages[path]

    def growth(self, path: str) -> float:
        avg = self.average(path)
        return 0.0 if avg == 0 else self.current(path) / avg


# --- detectors -------------------------------------------------------------------------------------
class Detector:
    def __init__(self, args: Any, hz: int) -> None:
        self.args = args
        self.hz = hz
        self.hit_at: int | None = None

    def _held(self, above: bool, now: int, duration: Duration) -> bool:
        """Above the threshold for ``duration`` whole seconds (a dip resets the timer)."""
        if not above:
            self.hit_at = None
            return False
        if self.hit_at is None:
            self.hit_at = now
        return (now - self.hit_at) // self.hz >= duration.ns // NSEC_PER_SEC

    def run(self, tick: Tick, now: int) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class PressureAbove(Detector):
    def run(self, tick: Tick, now: int) -> bool:
        best = (0.0, 0.0, 0.0)
        for path in tick.resolve(self.args.cgroup):
            p = tick.full(path)
            if p[0] * 3 + p[1] * 2 + p[2] > best[0] * 3 + best[1] * 2 + best[2]:
                best = p
        return self._held(best[0] > self.args.threshold, now, self.args.duration)


class MemoryAbove(Detector):
    def run(self, tick: Tick, now: int) -> bool:
        anon = self.args.threshold_anon is not None
        spec = self.args.threshold_anon if anon else self.args.threshold
        threshold = resolve_size(spec, tick.meminfo().MemTotal * KiB)
        usage = 0
        for path in tick.resolve(self.args.cgroup):
            usage = max(usage, tick.anon(path) if anon else tick.current(path))
        return self._held(usage > threshold, now, self.args.duration)


class SwapFree(Detector):
    def run(self, tick: Tick, now: int) -> bool:
        mi = tick.meminfo()
        total, free = mi.SwapTotal * KiB, mi.SwapFree * KiB
        return free < total * self.args.threshold_pct // 100


DETECTORS = {"pressure_above": PressureAbove, "memory_above": MemoryAbove, "swap_free": SwapFree}


# --- actions ---------------------------------------------------------------------------------------
def _mib(n: int) -> str:
    return f"{n // (1024 * 1024)}MB"  # as oomd logs sizes


class KillAction:
    """BaseKillPlugin: rank the candidates, kill the first one that has anything to kill."""

    def __init__(self, args: Any, daemon: "Oomd") -> None:
        self.args = args
        self.daemon = daemon

    def prerun(self, tick: Tick) -> None:
        """Keep the temporal counters (averages) of the candidates current every tick."""

    def rank(self, tick: Tick, paths: list[str]) -> list[tuple[str, str]]:  # pragma: no cover
        """Candidates, best first, each with why it ranks there."""
        raise NotImplementedError

    async def run(self, tick: Tick, ruleset: "Ruleset", group: str) -> bool:
        """True: something was killed (STOP); False: nothing to do (CONTINUE)."""
        host = tick.host
        for path, why in self.rank(tick, tick.resolve(self.args.cgroup)):
            cg = tick.cgroup(path)
            if not cg.populated or cg.stat.anon == 0:
                continue  # an empty cgroup, or one a kill already emptied of memory
            reason = (f"ruleset={ruleset.name} detectorgroup={group} {self.args.plugin}: "
                      f"picked {path} ({why}){' (dry)' if self.args.dry else ''}")
            if await self.kill_cgroup(host, path, reason):
                ruleset.pause(host.now, self.args.post_action_delay)
                return True
        return False

    async def kill_cgroup(self, host: Any, path: str, reason: str) -> bool:
        if self.args.dry:
            self.daemon.dry_kills.append((host.now, path, reason))
            return True
        if self.args.kernelkill:
            return await host.cgroup_kill(path, reason) > 0
        # SIGKILL every process of the subtree; again after a second while that still
        # finds processes (ones that appeared, or have not gone yet), at most ten rounds
        killed = last = 0
        for _ in range(KILL_TRIES):
            for pid in _subtree_procs(host, path):
                if await host.kill(pid, SIGKILL, reason) == 0:
                    killed += 1
            if killed == last:
                break
            if last:
                await host.sleep_jiffies(host.hz)
            last = killed
        return killed > 0


def _subtree_procs(host: Any, path: str) -> list[int]:
    cg = host.cgroup(path)
    if cg is None:
        return []
    pids = list(cg.procs)
    for child in cg.children:
        pids += _subtree_procs(host, child)
    return pids


class KillBySizeOrGrowth(KillAction):
    def prerun(self, tick: Tick) -> None:
        for path in tick.resolve(self.args.cgroup):
            tick.average(path)

    def rank(self, tick: Tick, paths: list[str]) -> list[tuple[str, str]]:
        # current oomd (KillMemoryGrowth::get_ranking_fn + rankForKilling): one sort by
        # (size-eligible effective usage, growth-eligible ratio, effective usage); every
        # cgroup at or over the size threshold is size-eligible, and every one whose
        # effective usage ties the percentile cut is growth-eligible.  Older releases
        # (tryToKillBySize / tryToKillByGrowth) walked three passes instead, stopping at the
        # first cgroup under the threshold and keeping exactly n growth candidates.
        # std::sort leaves equal ranks in no set order; here they keep the tree's order.
        a = self.args
        total = sum(tick.current(p) for p in paths)
        size_threshold = int(total * (a.size_threshold / 100))
        growth_floor = 0
        if paths:
            nth = math.ceil(len(paths) * (100 - a.growing_size_percentile) / 100) - 1
            by_eff = sorted((tick.effective(p) for p in paths), reverse=True)
            growth_floor = by_eff[max(0, nth)]
        ranked = []
        for i, p in enumerate(paths):
            cur, eff, growth = tick.current(p), tick.effective(p), tick.growth(p)
            size_ok = cur >= size_threshold
            growth_ok = growth >= a.min_growth_ratio and eff >= growth_floor
            if size_ok:
                why = f"size {_mib(cur)} >= {a.size_threshold}% of siblings' {_mib(total)}"
            elif growth_ok:
                why = (f"growth {growth:.2f} >= {a.min_growth_ratio} among the largest "
                       f"{100 - a.growing_size_percentile}%")
            else:
                why = f"effective usage {_mib(eff)}"
            ranked.append(((eff if size_ok else 0, growth if growth_ok else 0.0, eff), i, p, why))
        ranked.sort(key=lambda r: (r[0], -r[1]), reverse=True)
        return [(p, why) for _, _, p, why in ranked]


class KillBySwapUsage(KillAction):
    def rank(self, tick: Tick, paths: list[str]) -> list[tuple[str, str]]:
        spec = self.args.threshold
        threshold = 1 if spec is None else resolve_size(spec, tick.meminfo().SwapTotal * KiB)
        rows = [(tick.cgroup(p).memory_swap_current, i, p) for i, p in enumerate(paths)]
        rows = [r for r in rows if r[0] >= threshold]
        rows.sort(key=lambda r: (r[0], -r[1]), reverse=True)
        return [(p, f"swap usage {_mib(swap)}") for swap, _, p in rows]


class KillByPressure(KillAction):
    def rank(self, tick: Tick, paths: list[str]) -> list[tuple[str, str]]:
        rows = []
        for i, p in enumerate(paths):
            a10, a60, _ = tick.full(p)
            rows.append((int(a10 / 2 + a60 / 2), i, p, a10, a60))
        rows.sort(key=lambda r: (r[0], -r[1]), reverse=True)
        return [(p, f"pressure 10s={a10:.2f} 60s={a60:.2f}") for _, _, p, a10, a60 in rows]


ACTIONS = {"kill_by_memory_size_or_growth": KillBySizeOrGrowth, "kill_by_swap_usage": KillBySwapUsage,
           "kill_by_pressure": KillByPressure}


class Ruleset:
    def __init__(self, args: RulesetArgs, daemon: "Oomd", hz: int) -> None:
        self.name = args.name
        self.groups = [(g.name, [DETECTORS[d.plugin](d, hz) for d in g.detectors])
                       for g in args.detector_groups]
        self.actions = [ACTIONS[a.plugin](a, daemon) for a in args.actions]
        self.hz = hz
        self.paused_until = 0

    def pause(self, now: int, delay: Duration) -> None:
        self.paused_until = max(self.paused_until, now + delay.ns // NSEC_PER_SEC * self.hz)

    def check(self, tick: Tick, now: int) -> str | None:
        """Run every detector of every group; the first group that fired, or None."""
        fired = None
        for name, detectors in self.groups:
            results = [d.run(tick, now) for d in detectors]  # all run: their timers count
            if all(results) and fired is None:
                fired = name
        return fired

    async def run_once(self, tick: Tick, now: int) -> None:
        group = self.check(tick, now)
        if now < self.paused_until or group is None:
            return
        for action in self.actions:
            if await action.run(tick, self, group):
                break  # STOP


# --- the daemon ------------------------------------------------------------------------------------
class Oomd(Daemon):
    """Meta's oomd: rulesets of PSI / memory / swap detectors and cgroup-killing actions."""

    name = "oomd"
    description = "Meta's oomd: rulesets of pressure_above/memory_above/swap_free, kill_by_memory_size_or_growth"
    Params = OomdParams
    comm = "oomd"
    uid = 0
    oom_score_adj = 0

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.dry_kills: list[tuple[int, str, str]] = []  # (jiffy, cgroup, reason) of dry runs

    @classmethod
    def check_config(cls, params: OomdParams, cfg: Any) -> list[tuple[tuple, str]]:
        """A detector's or action's ``cgroup`` part without wildcards must name a declared
        cgroup: the model's cgroups never change during a run, so a literal that matches
        nothing is a typo (a pattern that matches nothing is allowed, as in oomd)."""
        paths = config_cgroups(cfg)
        out: list[tuple[tuple, str]] = []

        def check(key: tuple, spec: str) -> None:
            for pat in split_patterns(spec):
                if not any(c in pat for c in "*?[") and not glob_cgroups([pat], paths):
                    out.append((key + ("cgroup",), f"no cgroup {pat!r} in memcgs"))

        for i, rs in enumerate(params.rulesets):
            for j, group in enumerate(rs.detector_groups):
                for k, det in enumerate(group.detectors):
                    if getattr(det, "cgroup", None) is not None:
                        check(("rulesets", i, "detector_groups", j, "detectors", k), det.cgroup)
            for k, act in enumerate(rs.actions):
                check(("rulesets", i, "actions", k), act.cgroup)
        return out

    async def run(self, host: Any) -> None:
        hz = host.hz
        rulesets = [Ruleset(r, self, hz) for r in self.params.rulesets]
        interval = self.params.interval.ns // NSEC_PER_SEC * hz
        averages: dict[str, int] = {}
        while True:
            await host.sleep_jiffies(interval)
            tick = Tick(host, averages)
            for rs in rulesets:           # Engine::prerun
                for action in rs.actions:
                    action.prerun(tick)
            for rs in rulesets:           # Engine::runOnce
                await rs.run_once(tick, host.now)
            averages = tick.averages      # what was not looked at this tick starts from 0 again
