"""PSI's numbers: its constants, the fixed-point running averages (calc_load and friends
of include/linux/sched/loadavg.h, as kernel/sched/psi.c uses them) and what a read of a
pressure file returns.  :mod:`oomactors.psi` re-exports every name."""

from __future__ import annotations

from dataclasses import dataclass

NSEC_PER_SEC = 1_000_000_000
NSEC_PER_USEC = 1000

# include/linux/sched/loadavg.h
FSHIFT = 11
FIXED_1 = 1 << FSHIFT
# kernel/sched/psi.c: 1/exp(2s/10s), 1/exp(2s/60s), 1/exp(2s/300s) in fixed point
EXP_10s = 1677
EXP_60s = 1981
EXP_300s = 2034
EXPS = (EXP_10s, EXP_60s, EXP_300s)

# trigger windows (psi_trigger_create)
WINDOW_MIN_US = 500_000
WINDOW_MAX_US = 10_000_000
UPDATES_PER_WINDOW = 10

# the memory states of a group (enum psi_states, memory half)
SOME, FULL, NONIDLE = 0, 1, 2
STATE_NAMES = ("some", "full")

# a task's psi flags (TSK_* of include/linux/psi_types.h; TSK_IOWAIT is not modelled)
TSK_MEMSTALL = 1
TSK_RUNNING = 2
TSK_ONCPU = 4

# enum psi_aggregators: the averaging worker (and readers) and the trigger poller fold
# the per-CPU times separately
PSI_AVGS, PSI_POLL = 0, 1


def psi_freq(hz: int) -> int:
    """PSI_FREQ in jiffies: 2 s plus one tick."""
    return 2 * hz + 1


# --- fixed-point load averages (include/linux/sched/loadavg.h, kernel/sched/loadavg.c) -------
def calc_load(load: int, exp: int, active: int) -> int:
    """One step of an exponential average: load*exp + active*(1-exp), rounded up while
    rising (so a constant input is reached, not approached forever)."""
    newload = load * exp + active * (FIXED_1 - exp)
    if active >= load:
        newload += FIXED_1 - 1
    return newload // FIXED_1


def fixed_power_int(x: int, frac_bits: int, n: int) -> int:
    """x**n in fixed point with ``frac_bits`` fractional bits, rounding each product."""
    result = 1 << frac_bits
    half = 1 << (frac_bits - 1)
    while n:
        if n & 1:
            result = (result * x + half) >> frac_bits
        n >>= 1
        if not n:
            break
        x = (x * x + half) >> frac_bits
    return result


def calc_load_n(load: int, exp: int, active: int, n: int) -> int:
    """``n`` steps of :func:`calc_load` with the same input, in one go."""
    return calc_load(load, fixed_power_int(exp, FSHIFT, n), active)


def calc_avgs(avg: list[int], missed_periods: int, time: int, period: int) -> None:
    """Fold one period's stall ``time`` (ns) of ``period`` (ns) into avg10/60/300, after
    decaying ``missed_periods`` periods of no activity."""
    if missed_periods:
        for i, e in enumerate(EXPS):
            avg[i] = calc_load_n(avg[i], e, 0, missed_periods)
    pct = time * 100 // period * FIXED_1
    for i, e in enumerate(EXPS):
        avg[i] = calc_load(avg[i], e, pct)


def load_int(x: int) -> int:
    return x >> FSHIFT


def load_frac(x: int) -> int:
    return load_int((x & (FIXED_1 - 1)) * 100)


def centi(x: int) -> int:
    """A fixed-point average as the file prints it, in hundredths of a percent
    (``avg10=12.34`` is 1234): the integer part and two truncated decimals."""
    return load_int(x) * 100 + load_frac(x)


# --- what a read returns -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PressureLine:
    """One line of a pressure file: the averages in hundredths of a percent, as printed
    (``avg10=12.34`` -> 1234), the raw fixed-point values, and ``total=`` in microseconds."""

    avg10: int
    avg60: int
    avg300: int
    total: int
    raw: tuple[int, int, int] = (0, 0, 0)

    def percent(self, which: str = "avg10") -> float:
        return getattr(self, which) / 100


@dataclass(frozen=True, slots=True)
class Pressure:
    """A read of ``/proc/pressure/memory`` or a cgroup's ``memory.pressure``."""

    some: PressureLine
    full: PressureLine

    def text(self) -> str:
        """The file's two lines, byte for byte as the kernel prints them."""
        out = []
        for name, line in (("some", self.some), ("full", self.full)):
            out.append(f"{name} avg10={line.avg10 // 100}.{line.avg10 % 100:02d} "
                       f"avg60={line.avg60 // 100}.{line.avg60 % 100:02d} "
                       f"avg300={line.avg300 // 100}.{line.avg300 % 100:02d} total={line.total}")
        return "\n".join(out) + "\n"
